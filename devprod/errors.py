"""devprod's failures, each with the exit code the CLI documents; mapped to one line in one place (cli.py).

Anything else that escapes a command is a bug: the CLI says so, with how to
report it, and exits 70 instead of passing it off as bad input.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_AWS = 3
EXIT_TIMEOUT = 4
EXIT_BUG = 70  # EX_SOFTWARE


class DevprodError(Exception):
    """A failure the user can act on; str() is the one line shown."""

    exit_code = EXIT_FAILED


class OperationFailed(DevprodError):
    """The operation ran and failed (unhealthy, deploy failed and rolled back)."""

    exit_code = EXIT_FAILED


class BadInput(DevprodError):
    """A flag, file, key or name is wrong or missing."""

    exit_code = EXIT_BAD_INPUT


class AwsFailure(DevprodError):
    """AWS could not be asked or refused: credentials, permissions, throttling, not found."""

    exit_code = EXIT_AWS


class TimedOut(DevprodError):
    exit_code = EXIT_TIMEOUT
