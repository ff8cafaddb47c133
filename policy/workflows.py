"""Workflow rules as pure functions over a GitHub Actions workflow's text (S27, S28).

S28: every `uses:` is pinned to a full commit SHA with its version in a comment
(what Dependabot keeps current). S27: no job that a pull request can start sees
a secret or an OIDC token unless it names an environment, whose protection
rules then decide; the one exception is a job whose every AWS role is a
read-only one the caller names. The same functions back the policy pack (for
the workflow devprod writes into the app repository) and the tests (for this
repository's workflows).
"""

from __future__ import annotations

import re
from typing import Any, Collection, Iterator

from ruamel.yaml import YAML

USES_LINE = re.compile(r"""^\s*(?:-\s+)?uses:\s*['"]?(?P<ref>[^\s'"#]+)['"]?[ \t]*(?:#[ \t]*(?P<comment>\S+))?""", re.M)
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[^@\s]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^v[0-9]+(\.[0-9]+){0,2}$")
PULL_REQUEST_EVENTS = frozenset({"pull_request", "pull_request_target"})
AWS_CREDENTIALS_ACTION = "aws-actions/configure-aws-credentials@"


def load(text: str) -> dict[str, Any]:
    # YAML 1.2 (ruamel): the `on:` key stays a string, not the boolean True. The pure
    # parser: libyaml refuses `image: [node:18]`, a plain ':' in a flow sequence.
    data = YAML(typ="safe", pure=True).load(text)
    return data if isinstance(data, dict) else {}


def jobs(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = data.get("jobs")
    return {name: job for name, job in found.items() if isinstance(job, dict)} if isinstance(found, dict) else {}


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for step in job.get("steps") or [] if isinstance(step, dict)]


def uses_of(data: dict[str, Any]) -> Iterator[str]:
    """Every action or reusable workflow a workflow runs: job-level and step-level `uses`."""
    for job in jobs(data).values():
        if isinstance(job.get("uses"), str):
            yield job["uses"]
        for step in steps(job):
            if isinstance(step.get("uses"), str):
                yield step["uses"]


def uses_problems(text: str) -> list[str]:
    """S28: full commit SHAs, each with a `# vX.Y.Z` comment; local actions come from the same commit."""
    comments = {m["ref"]: m["comment"] for m in USES_LINE.finditer(text)}
    problems = []
    for ref in uses_of(load(text)):
        if ref.startswith("./"):
            continue
        if ref.startswith("docker://"):
            if "@sha256:" not in ref:
                problems.append(f"uses {ref!r} is not pinned to an image digest")
        elif not PINNED.match(ref):
            problems.append(f"uses {ref!r} is not pinned to a full commit SHA")
        elif not VERSION_COMMENT.match(comments.get(ref) or ""):
            problems.append(f"uses {ref!r} has no '# vX.Y.Z' comment naming its version")
    return problems


def triggers(data: dict[str, Any]) -> set[str]:
    on = data.get("on")
    if isinstance(on, str):
        return {on}
    return {str(event) for event in on} if isinstance(on, (list, dict)) else set()


def _requests_oidc(permissions: Any) -> bool:
    if permissions == "write-all":
        return True
    return isinstance(permissions, dict) and permissions.get("id-token") == "write"


def _read_only_aws_job(job: dict[str, Any], read_only_roles: Collection[str]) -> bool:
    """True when the job assumes AWS roles and every one of them is a named read-only role."""
    roles = [
        (step.get("with") or {}).get("role-to-assume")
        for step in steps(job)
        if str(step.get("uses", "")).startswith(AWS_CREDENTIALS_ACTION)
    ]
    return bool(roles) and all(role in read_only_roles for role in roles)


def pull_request_exposures(text: str, read_only_roles: Collection[str] = ()) -> list[str]:
    """S27: jobs a pull request can start read no secret and request no OIDC token outside an environment."""
    data = load(text)
    if not triggers(data) & PULL_REQUEST_EVENTS:
        return []
    problems = []
    if "secrets." in str(data.get("env") or ""):
        problems.append("workflow-level env reads a secret, and pull requests start this workflow")
    for name, job in jobs(data).items():
        if job.get("environment"):
            continue
        where = f"job {name!r} can run for a pull request without an environment"
        if "secrets." in str(job) or "secrets[" in str(job) or job.get("secrets") == "inherit":
            problems.append(f"{where} and reads a secret")
        permissions = job.get("permissions", data.get("permissions"))
        if permissions is None:
            problems.append(f"{where} and sets no permissions (the repository default applies)")
        elif _requests_oidc(permissions) and not _read_only_aws_job(job, read_only_roles):
            problems.append(f"{where} and may request an OIDC token (id-token: write)")
    return problems
