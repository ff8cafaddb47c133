"""Where the operator commands get names from: flags, then DEVPROD_* variables, then stack outputs.

Stack outputs come from `pulumi stack output --json` when the Pulumi CLI is on
PATH; without it (CI, a laptop) flags and environment variables are enough.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from devprod import contracts as c
from devprod.errors import BadInput

# name -> (environment variable, how to find it in the stack outputs)
def _output(section: str, key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda outputs: (outputs.get(section) or {}).get(key)


SOURCES: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "pipeline": ("DEVPROD_PIPELINE", _output(c.OUT_PIPELINE, c.OUT_PIPELINE_NAME)),
    "document": ("DEVPROD_DOCUMENT", _output(c.OUT_PRODUCTION, c.OUT_DOCUMENT)),
    "health_url": ("DEVPROD_HEALTH_URL", _output(c.OUT_PRODUCTION, c.OUT_HEALTH_URL)),
    "region": ("DEVPROD_REGION", _output(c.OUT_PRODUCTION, c.OUT_REGION)),
    "log_group": ("DEVPROD_DEPLOY_LOG_GROUP", _output(c.OUT_PRODUCTION, c.OUT_LOG_GROUP)),
    "bucket": ("DEVPROD_ARTIFACT_BUCKET", _output(c.OUT_PRODUCTION, c.OUT_BUCKET)),
    "target_group": ("DEVPROD_TARGET_GROUP_ARN", _output(c.OUT_PRODUCTION, c.OUT_TARGET_GROUP)),
    "app_port": ("DEVPROD_APP_PORT", _output(c.OUT_PRODUCTION, c.OUT_APP_PORT)),
}


class MissingName(BadInput):
    """A name (pipeline, document, bucket, ...) that no flag, variable or stack output gives."""


@dataclass
class StackNames:
    stack: str
    outputs: dict[str, Any]
    note: str | None = None

    def get(self, name: str, flag: str | None = None, *, required: bool = True, option: str | None = None) -> str | None:
        """The name from its flag (`option`, when the command spells it differently), variable or outputs."""
        env_var, from_outputs = SOURCES[name]
        value = flag or os.environ.get(env_var) or from_outputs(self.outputs)
        if value is None and required:
            option = option or "--" + name.replace("_", "-")
            raise MissingName(
                f"{name.replace('_', ' ')} unknown: pass {option}, set {env_var}, or run where "
                f"`pulumi stack output --stack {self.stack}` works" + (f" ({self.note})" if self.note else "")
            )
        return value

    def region(self, flag: str | None) -> tuple[str | None, str | None]:
        """The region and the name of where it came from; (None, None) leaves it to the AWS config."""
        candidates = (
            (flag, "--region"),
            (os.environ.get("AWS_REGION"), "AWS_REGION"),
            (os.environ.get("DEVPROD_REGION"), "DEVPROD_REGION"),
            (SOURCES["region"][1](self.outputs), f"stack output {c.OUT_PRODUCTION}.{c.OUT_REGION}"),
        )
        return next(((value, source) for value, source in candidates if value), (None, None))

    def developer(self, name: str) -> dict[str, Any] | None:
        return (self.outputs.get(c.OUT_DEVELOPERS) or {}).get(name)


def load(stack: str, project_dir: Path | None = None, runner: Callable[..., Any] = subprocess.run) -> StackNames:
    if shutil.which("pulumi") is None:
        return StackNames(stack, {}, "no Pulumi CLI on PATH")
    try:
        result = runner(
            ["pulumi", "stack", "output", "--json", "--stack", stack],
            cwd=project_dir, capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return StackNames(stack, {}, f"pulumi stack output failed: {exc}")
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no error text"])[0]
        return StackNames(stack, {}, f"pulumi stack output failed: {first}")
    return StackNames(stack, json.loads(result.stdout or "{}"))
