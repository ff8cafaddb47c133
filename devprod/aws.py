"""The one place that builds boto3 clients, and the one place that turns AWS errors into one line."""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

from devprod.errors import AwsFailure, BadInput

# Standard retry mode: exponential backoff with jitter on throttling and
# transient errors, capped, as the AWS SDKs recommend.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=30,
    user_agent_extra="devprod-cli",
)


class AwsProblem(AwsFailure):
    """An AWS call failed; str() is one line: what was being done and what AWS answered."""


@functools.lru_cache(maxsize=1)
def known_regions() -> frozenset[str]:
    """Every region of every partition botocore's endpoint data lists (EC2 is offered in all of them)."""
    session = boto3.session.Session()
    return frozenset(r for p in session.get_available_partitions() for r in session.get_available_regions("ec2", p))


def check_region(region: str, source: str) -> None:
    """Refuse a region AWS does not have, naming where it came from (a typo is not a credentials problem)."""
    if region in known_regions():
        return
    close = difflib.get_close_matches(region, sorted(known_regions()), n=1)
    hint = f"did you mean {close[0]}?" if close else f"botocore {botocore.__version__} knows no such region"
    raise BadInput(f"{source} {region!r} is not an AWS region; {hint}")


def _configured_region_source(profile: str | None) -> str:
    """Where boto3 found a region nobody passed: the environment or the profile."""
    if os.environ.get("AWS_DEFAULT_REGION"):
        return "AWS_DEFAULT_REGION"
    return f"region of AWS profile {profile or os.environ.get('AWS_PROFILE') or 'default'}"


@dataclass
class Clients:
    """Lazily built clients sharing one session; tests pass their own (stubbed or moto) clients.

    With `region_source` (what the user calls the place `region` came from:
    "--region", "AWS_REGION", ...) the region is checked before any client is
    built; the Release function, which trusts its runtime's region, leaves it None.
    """

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    region_source: str | None = None
    _made: dict[str, Any] = field(default_factory=dict)

    def _session(self) -> Any:
        if "_session" not in self._made:
            try:
                session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
            except ProfileNotFound:
                raise BadInput(f"--profile / AWS_PROFILE: no profile {self.profile!r} in the AWS config") from None
            if self.region_source is not None and session.region_name:
                source = self.region_source if self.region else _configured_region_source(self.profile)
                check_region(session.region_name, source)
            self._made["_session"] = session
        return self._made["_session"]

    def __getattr__(self, service: str) -> Any:
        if service.startswith("_"):
            raise AttributeError(service)
        if service not in self._made:
            endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
            try:
                self._made[service] = self._session().client(
                    service.replace("_", "-"), endpoint_url=endpoint, config=CLIENT_CONFIG
                )
            except NoRegionError:
                raise BadInput("no AWS region: pass --region or set AWS_REGION") from None
        return self._made[service]

    def use(self, service: str, client: Any) -> "Clients":
        self._made[service] = client
        return self


@contextlib.contextmanager
def doing(what: str) -> Iterator[None]:
    """Turn any AWS failure inside the block into AwsProblem('<what>: <answer>')."""
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise AwsProblem(
            f"{what}: no AWS credentials found (set AWS_PROFILE, run `aws sso login`, or export AWS_ACCESS_KEY_ID)"
        ) from None
    except NoRegionError:
        raise AwsProblem(f"{what}: no AWS region (pass --region or set AWS_REGION)") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "Unknown")
        message = " ".join(error.get("Message", "").split())
        if message.lower().startswith(("<!doctype", "<html")):
            message = "(an HTML error page)"  # an endpoint that is not AWS (or moto's 500) answered
        hint = ""
        if code in ("ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"):
            hint = " (throttled even after retries; try again in a minute)"
        elif code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "403"):  # 403: S3 HEAD
            hint = " (the caller's IAM permissions do not allow this)"
        raise AwsProblem(f"{what}: AWS answered {code}: {message}{hint}") from None
    except EndpointConnectionError as exc:
        raise AwsProblem(f"{what}: could not reach AWS ({exc})") from None
    except BotoCoreError as exc:
        raise AwsProblem(f"{what}: {exc}") from None
