"""The one place that builds boto3 clients, and the one place that turns AWS errors into one line."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import boto3
from botocore.config import Config

from devprod.errors import AwsFailure, BadInput
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

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


@dataclass
class Clients:
    """Lazily built clients sharing one session; tests pass their own (stubbed or moto) clients."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    _made: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, service: str) -> Any:
        if service.startswith("_"):
            raise AttributeError(service)
        if service not in self._made:
            endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
            try:
                session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
                self._made[service] = session.client(
                    service.replace("_", "-"), endpoint_url=endpoint, config=CLIENT_CONFIG
                )
            except ProfileNotFound:
                raise BadInput(f"--profile / AWS_PROFILE: no profile {self.profile!r} in the AWS config") from None
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
        message = error.get("Message", "").strip()
        hint = ""
        if code in ("ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"):
            hint = " (throttled even after retries; try again in a minute)"
        elif code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            hint = " (the caller's IAM permissions do not allow this)"
        raise AwsProblem(f"{what}: AWS answered {code}: {message}{hint}") from None
    except EndpointConnectionError as exc:
        raise AwsProblem(f"{what}: could not reach AWS ({exc})") from None
    except BotoCoreError as exc:
        raise AwsProblem(f"{what}: {exc}") from None
