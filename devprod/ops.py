"""Production operations behind `devprod status/logs/health/deploy/rollback/bootstrap`.

Every function takes the clients it uses (see devprod.aws.Clients) and returns
plain data; the CLI renders it. AWS errors surface as devprod.aws.AwsProblem.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Callable

from botocore.exceptions import ClientError

from devprod.aws import AwsProblem, doing
from devprod.contracts import production_target
from devprod.errors import BadInput

SHA_PATTERN = re.compile(r"^[0-9a-f]{7,40}$")
DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")
TERMINAL_COMMAND_STATES = {
    "Success", "Failed", "Cancelled", "TimedOut", "Undeliverable", "Terminated",
    "InvalidPlatform", "AccessDenied", "DeliveryTimedOut", "ExecutionTimedOut",
}


def _unless_absent(call: Callable[[], Any], *codes: str) -> Any:
    """The call's answer, or None when AWS answers that the thing does not exist (any other error propagates)."""
    try:
        return call()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in codes:
            return None
        raise


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


# ------------------------------------------------------------------ status


@dataclass
class Execution:
    id: str
    status: str
    commit: str | None
    trigger: str | None
    started: str | None
    updated: str | None
    duration_seconds: float | None
    stages: dict[str, str] = field(default_factory=dict)


def commit_of(pipeline_client: Any, pipeline: str, execution_id: str) -> str | None:
    with doing(f"reading execution {execution_id} of {pipeline}"):
        detail = pipeline_client.get_pipeline_execution(pipelineName=pipeline, pipelineExecutionId=execution_id)
    for variable in detail["pipelineExecution"].get("variables", []):
        if variable.get("name") == "COMMIT_SHA":
            return variable.get("resolvedValue")
    return None


def action_executions(actions_client: Any, pipeline: str, execution_id: str) -> list[dict[str, Any]]:
    with doing(f"listing actions of execution {execution_id} of {pipeline}"):
        pages = actions_client.get_paginator("list_action_executions").paginate(
            pipelineName=pipeline, filter={"pipelineExecutionId": execution_id}
        )
        return [a for page in pages for a in page.get("actionExecutionDetails", [])]


def stage_statuses(actions: list[dict[str, Any]]) -> dict[str, str]:
    stages: dict[str, str] = {}
    for action in sorted(actions, key=lambda a: a.get("startTime") or datetime.min):
        stage = action.get("stageName", "?")
        status = action.get("status", "?")
        # A stage is as bad as its worst action.
        if stages.get(stage) in ("Failed", "InProgress") and status == "Succeeded":
            continue
        stages[stage] = status
    return stages


def executions(
    pipeline_client: Any, pipeline: str, limit: int = 5, actions_client: Any | None = None
) -> list[Execution]:
    """The last `limit` executions, newest first, with commit and per-stage status."""
    actions_client = actions_client or pipeline_client
    found: list[Execution] = []
    with doing(f"listing executions of pipeline {pipeline}"):
        pages = pipeline_client.get_paginator("list_pipeline_executions").paginate(
            pipelineName=pipeline, PaginationConfig={"MaxItems": limit}
        )
        summaries = [s for page in pages for s in page.get("pipelineExecutionSummaries", [])][:limit]
    for summary in summaries:
        started, updated = summary.get("startTime"), summary.get("lastUpdateTime")
        duration = (updated - started).total_seconds() if isinstance(started, datetime) and isinstance(updated, datetime) else None
        execution_id = summary["pipelineExecutionId"]
        found.append(
            Execution(
                id=execution_id,
                status=summary.get("status", "?"),
                commit=commit_of(pipeline_client, pipeline, execution_id),
                trigger=(summary.get("trigger") or {}).get("triggerType"),
                started=_iso(started),
                updated=_iso(updated),
                duration_seconds=duration,
                stages=stage_statuses(action_executions(actions_client, pipeline, execution_id)),
            )
        )
    return found


# ------------------------------------------------------------------ health


@dataclass
class Health:
    url: str
    healthy: bool
    status: int | None
    latency_ms: float | None
    release: str | None
    attempts: int
    error: str | None = None
    # The app slot (blue | green) nginx routes to, from its X-Devprod-Slot header.
    slot: str | None = None


def check_health(url: str, *, retries: int = 3, timeout: float = 5.0, pause: float = 1.0) -> Health:
    """GET the health URL up to `retries` times; healthy on the first 2xx."""
    try:
        parts = urllib.parse.urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in url
    except ValueError:
        valid = False
    if not valid:
        raise BadInput(f"--url must be an http(s) URL such as http://HOST:8000/health, got {url!r}")
    if timeout <= 0:
        raise BadInput(f"--timeout must be more than 0 seconds, got {timeout}")
    last = Health(url, False, None, None, None, 0, "not tried")
    for attempt in range(1, retries + 1):
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body = response.read(65536)
                latency = (time.perf_counter() - started) * 1000
                release = None
                try:
                    release = json.loads(body).get("release")
                except (ValueError, AttributeError):
                    pass
                # nginx names the slot and release it routes to, whether or not the app reports one.
                release = release or response.headers.get("X-Devprod-Release")
                slot = response.headers.get("X-Devprod-Slot")
                return Health(url, True, response.status, round(latency, 1), release, attempt, slot=slot)
        except urllib.error.HTTPError as exc:
            last = Health(url, False, exc.code, round((time.perf_counter() - started) * 1000, 1), None, attempt, f"HTTP {exc.code}",
                          slot=exc.headers.get("X-Devprod-Slot") if exc.headers else None)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            last = Health(url, False, None, None, None, attempt, f"{reason}")
        if attempt < retries:
            time.sleep(pause)
    return last


SWITCH_LINE = re.compile(r"current -> releases/([0-9a-f]{7,40})")


def release_from_deploy_log(logs: Any, group: str, streams: int = 10) -> str | None:
    """The release deploy.sh last switched to, from the deploy document's CloudWatch output."""
    with doing(f"reading deploy log group {group}"):
        found = logs.describe_log_streams(logGroupName=group, orderBy="LastEventTime", descending=True, limit=streams)
        for stream in found.get("logStreams", []):
            events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"],
                                         startFromHead=False, limit=500).get("events", [])
            for event in reversed(events):
                match = SWITCH_LINE.search(event.get("message", ""))
                if match:
                    return match.group(1)
    return None


def production_state(clients: Any, url: str | None, log_group: str | None) -> tuple[Health | None, str | None]:
    """Production's health and the release it serves, with where that was read: "health", "deploy-log" or None."""
    live = check_health(url, retries=1, timeout=3) if url else None
    if live is not None and live.release:
        return live, "health"
    release = release_from_deploy_log(clients.logs, log_group) if log_group else None
    if release is None:
        return live, None
    live = live or Health(url or "", False, None, None, None, 0, "no health URL known")
    live.release = release
    return live, "deploy-log"


# ------------------------------------------------------------------ deploy / rollback


@dataclass
class Invocation:
    instance_id: str
    status: str
    output: str = ""
    error: str = ""


def production_instances(ec2: Any, stack: str) -> list[str]:
    with doing(f"finding production instances of stack {stack}"):
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": f"tag:{k}", "Values": [v]} for k, v in production_target(stack).items()]
            + [{"Name": "instance-state-name", "Values": ["running"]}]
        )
        return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]


def deploy_request(
    document: str,
    instances: list[str],
    action: str,
    release: str | None,
    log_group: str | None,
    checksum: str | None = None,
) -> dict[str, Any]:
    """The SendCommand request for the deploy document; `checksum` is what the host verifies (S26)."""
    if release is not None and not SHA_PATTERN.match(release):
        raise BadInput(f"release {release!r} is not a git sha (7-40 lowercase hex)")
    if checksum is not None and not DIGEST_PATTERN.match(checksum):
        raise BadInput(f"checksum {checksum!r} is not a sha256 digest (64 lowercase hex)")
    request: dict[str, Any] = {
        "DocumentName": document,
        "InstanceIds": instances,
        "Parameters": {"release": [release or ""], "action": [action], "checksum": [checksum or ""]},
        "MaxConcurrency": "1",
        "MaxErrors": "0",
        "Comment": f"devprod CLI {action} {release or 'previous'}"[:100],
    }
    if log_group:
        request["CloudWatchOutputConfig"] = {"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": log_group}
    return request


RELEASE_PREFIX = "releases"
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


def parse_release(given: str, flag: str) -> str:
    """A git sha or an abbreviation of one (7-40 hex digits, any case), lowercased; else BadInput naming `flag`."""
    sha = given.strip().lower()
    if not SHA_PATTERN.match(sha):
        raise BadInput(f"{flag} {given!r} is not a git sha: give 7 to 40 hex digits")
    return sha


def release_keys(sha: str, prefix: str = RELEASE_PREFIX) -> tuple[str, str]:
    """The release archive and its checksum, as the Release action publishes them (S26)."""
    return f"{prefix}/{sha}.tar.gz", f"{prefix}/{sha}.tar.gz.sha256"


def _published_shas(s3: Any, bucket: str, start: str, prefix: str) -> set[str]:
    """Full shas of the releases whose key starts with `start` (listed, paginated)."""
    found: set[str] = set()
    with doing(f"listing s3://{bucket}/{prefix}/{start}*"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/{start}"):
            for item in page.get("Contents", []):
                sha = item["Key"][len(prefix) + 1:].split(".", 1)[0]
                if FULL_SHA.match(sha):
                    found.add(sha)
    return found


def resolve_release(s3: Any, bucket: str, given: str, *, flag: str = "--release", prefix: str = RELEASE_PREFIX) -> str:
    """The full sha of a published release named by a full sha or a unique abbreviation.

    Releases are stored under the full sha, and deploy.sh looks them up by it;
    both the archive and its checksum must be in the bucket.
    """
    sha = parse_release(given, flag)
    if len(sha) < 40:
        matches = sorted(_published_shas(s3, bucket, sha, prefix))
        if not matches:
            raise BadInput(f"{flag} {given}: no release in s3://{bucket}/{prefix}/ starts with {sha}")
        if len(matches) > 1:
            digits = max(12, len(os.path.commonprefix(matches)) + 4)  # enough to tell them apart
            shown = ", ".join(m[:digits] for m in matches[:4]) + (", ..." if len(matches) > 4 else "")
            raise BadInput(f"{flag} {given} is ambiguous: {len(matches)} releases start with it ({shown}); give more digits")
        sha = matches[0]
    for key in release_keys(sha, prefix):
        with doing(f"checking s3://{bucket}/{key}"):
            found = _unless_absent(lambda: s3.head_object(Bucket=bucket, Key=key), "404", "NoSuchKey", "NotFound")
        if found is None:
            named = given if given.lower() == sha else f"{given} (release {sha})"
            raise BadInput(f"{flag} {named} is not published: no s3://{bucket}/{key}")
    return sha


def release_checksum(s3: Any, bucket: str, release: str, prefix: str = RELEASE_PREFIX, *, required: bool = True) -> str | None:
    """The published digest of a release, from its immutable .sha256 object (which must name it).

    A release that was never published is an error, or None when not `required`.
    """
    key = release_keys(release, prefix)[1]
    with doing(f"reading s3://{bucket}/{key}"):
        answer = _unless_absent(lambda: s3.get_object(Bucket=bucket, Key=key), "NoSuchKey", "404")
        text = answer["Body"].read().decode(errors="replace") if answer is not None else None
    if text is None:
        if not required:
            return None
        raise BadInput(f"release {release} is not published (no s3://{bucket}/{key})")
    fields = text.split()
    if len(fields) != 2 or not DIGEST_PATTERN.match(fields[0].lower()) or fields[1].lstrip("*") != f"{release}.tar.gz":
        raise BadInput(f"s3://{bucket}/{key} does not read '<sha256>  {release}.tar.gz'")
    return fields[0].lower()


def send(ssm: Any, request: dict[str, Any]) -> str:
    with doing(f"sending {request['DocumentName']} to {', '.join(request['InstanceIds'])}"):
        return ssm.send_command(**request)["Command"]["CommandId"]


def invocation(ssm: Any, command_id: str, instance_id: str) -> Invocation:
    try:
        with doing(f"reading command {command_id} on {instance_id}"):
            answer = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    except AwsProblem as exc:
        if "InvocationDoesNotExist" in str(exc):
            return Invocation(instance_id, "Pending")
        raise
    return Invocation(
        instance_id,
        answer.get("Status", "?"),
        answer.get("StandardOutputContent", ""),
        answer.get("StandardErrorContent", ""),
    )


def wait_for(
    ssm: Any,
    command_id: str,
    instances: list[str],
    *,
    timeout: float = 2100,
    poll: float = 5,
    on_update: Callable[[dict[str, Invocation]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, Invocation], bool]:
    """Poll until every instance is terminal or `timeout` passes; returns (states, timed_out)."""
    deadline = clock() + timeout
    states = {i: Invocation(i, "Pending") for i in instances}
    while True:
        for instance in instances:
            if states[instance].status not in TERMINAL_COMMAND_STATES:
                states[instance] = invocation(ssm, command_id, instance)
        if on_update:
            on_update(states)
        if all(s.status in TERMINAL_COMMAND_STATES for s in states.values()):
            return states, False
        if clock() >= deadline:
            return states, True
        sleep(poll)


class SsmRunner:
    """devprod.rollout's Runner over SSM: one SendCommand of the deploy document per batch."""

    def __init__(self, ssm: Any, document: str, log_group: str | None, comment: str = "devprod"):
        self.ssm, self.document, self.log_group, self.comment = ssm, document, log_group, comment
        self.sent: list[str] = []
        self.cancel_problems: list[str] = []

    def start(self, hosts: list[str], action: str, release: str | None, checksum: str | None) -> str:
        request = deploy_request(self.document, hosts, action, release, self.log_group, checksum)
        # The whole batch at once; the rollout, not SSM, decides what happens after a failure.
        request["MaxConcurrency"] = str(len(hosts))
        request["Comment"] = f"{self.comment} {action} {release or 'previous'}"[:100]
        command = send(self.ssm, request)
        self.sent.append(command)
        return command

    def poll(self, handle: str, hosts: list[str]) -> dict[str, Any]:
        from devprod.rollout import HostResult

        results: dict[str, Any] = {}
        for host in hosts:
            state = invocation(self.ssm, handle, host)
            results[host] = (HostResult(state.status == "Success", state.status, state.error or state.output)
                             if state.status in TERMINAL_COMMAND_STATES else None)
        return results

    def cancel(self, handle: str) -> None:
        """Best effort: the rollout goes on to put the hosts back either way (deploy.sh's lock
        makes the rollback wait for a deploy still running), so a refused cancel is only noted."""
        try:
            with doing(f"cancelling command {handle}"):
                self.ssm.cancel_command(CommandId=handle)
        except AwsProblem as exc:
            self.cancel_problems.append(str(exc))


class AlbTraffic:
    """devprod.rollout's Traffic over an ALB target group: deregister, wait out the drain, register,
    wait for the health check. Hosts are instance ids registered on `port` (the app port)."""

    # DescribeTargetHealth states. A deregistered target reads `unused` (Target.NotRegistered)
    # once its drain has ended; while it drains, `draining`.
    GONE, HEALTHY = "unused", "healthy"

    def __init__(self, elbv2: Any, target_group_arn: str, port: int):
        self.elbv2, self.target_group_arn, self.port = elbv2, target_group_arn, port

    def _targets(self, hosts: list[str]) -> list[dict[str, Any]]:
        return [{"Id": host, "Port": self.port} for host in hosts]

    def _health(self, hosts: list[str]) -> list[dict[str, Any]]:
        with doing(f"reading target health in {self.target_group_arn}"):
            answer = self.elbv2.describe_target_health(TargetGroupArn=self.target_group_arn,
                                                       Targets=self._targets(hosts))
        return answer["TargetHealthDescriptions"]

    def states(self, hosts: list[str]) -> dict[str, str]:
        return {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in self._health(hosts)}

    def unregistered(self, hosts: list[str]) -> list[str]:
        """Hosts the group does not hold on this port: a wrong group or port (or a host left out
        by an interrupted rollout). A rollout would find no healthy host to leave to."""
        gone = {d["Target"]["Id"] for d in self._health(hosts)
                if d["TargetHealth"].get("Reason") == "Target.NotRegistered"}
        return [h for h in hosts if h in gone]

    def _every(self, hosts: list[str], state: str) -> bool:
        states = self.states(hosts)
        return all(states.get(host) == state for host in hosts)

    def _targets_call(self, operation: str, what: str, hosts: list[str]) -> None:
        with doing(f"{what} {', '.join(hosts)} ({self.target_group_arn})"):
            getattr(self.elbv2, operation)(TargetGroupArn=self.target_group_arn, Targets=self._targets(hosts))

    def detach(self, hosts: list[str]) -> None:
        self._targets_call("deregister_targets", "taking out of the load balancer", hosts)

    def detached(self, hosts: list[str]) -> bool:
        return self._every(hosts, self.GONE)

    def attach(self, hosts: list[str]) -> None:
        self._targets_call("register_targets", "putting back into the load balancer", hosts)

    def attached(self, hosts: list[str]) -> bool:
        return self._every(hosts, self.HEALTHY)


def put_back(traffic: "AlbTraffic | None", hosts: list[str]) -> str:
    """Best effort, when a rollout stops on an error: register the hosts it had taken out of the
    load balancer. Returns what to tell: what was done, or how to do it by hand ("" for nothing)."""
    if traffic is None or not hosts:
        return ""
    named = ", ".join(hosts)
    try:
        traffic.attach(list(hosts))
    except AwsProblem as exc:
        targets = " ".join(f"Id={h},Port={traffic.port}" for h in hosts)
        return (f"{named} may be out of the load balancer ({exc}); put back with: aws elbv2 register-targets "
                f"--target-group-arn {traffic.target_group_arn} --targets {targets}")
    return f"{named} put back in the load balancer"


def read_live_release(ssm: Any, parameter: str | None) -> tuple[str, str] | None:
    """(sha, sha256) every host should serve, from the live-release parameter; None when unset or absent."""
    from devprod.contracts import parse_live_release

    if not parameter:
        return None
    try:
        with doing(f"reading {parameter}"):
            value = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
    except AwsProblem as exc:
        if "ParameterNotFound" in str(exc):
            return None
        raise
    return parse_live_release(value)


def rollback_target(ssm: Any, parameter: str | None, release: str | None) -> tuple[str | None, str | None]:
    """Where a rollout of `release` puts its hosts back: the recorded live release, unless that is
    `release` itself (a re-run) or unknown, then (None, None): deploy.sh's own previous release."""
    live = read_live_release(ssm, parameter)
    return live if live and live[0] != release else (None, None)


def record_live_release(ssm: Any, parameter: str | None, release: str, checksum: str) -> None:
    """Once every host serves `release`: what a new host deploys before it takes traffic."""
    from devprod.contracts import live_release_value

    if not parameter:
        return
    with doing(f"recording {release} in {parameter}"):
        ssm.put_parameter(Name=parameter, Value=live_release_value(release, checksum), Type="String", Overwrite=True)


# ------------------------------------------------------------------ logs


@dataclass
class LogSection:
    title: str
    lines: list[str]


def latest_failed(pipeline_client: Any, pipeline: str, scan: int = 50) -> str | None:
    with doing(f"listing executions of pipeline {pipeline}"):
        pages = pipeline_client.get_paginator("list_pipeline_executions").paginate(
            pipelineName=pipeline, PaginationConfig={"MaxItems": scan}
        )
        for page in pages:
            for summary in page.get("pipelineExecutionSummaries", []):
                if summary.get("status") == "Failed":
                    return summary["pipelineExecutionId"]
    return None


def build_log(codebuild: Any, logs: Any, build_id: str, tail: int) -> list[str]:
    with doing(f"reading CodeBuild build {build_id}"):
        builds = codebuild.batch_get_builds(ids=[build_id]).get("builds", [])
    if not builds:
        return [f"(build {build_id} not found)"]
    location = builds[0].get("logs", {})
    group, stream = location.get("groupName"), location.get("streamName")
    if not group or not stream:
        return ["(the build has no CloudWatch log stream)"]
    with doing(f"reading log stream {group}/{stream}"):
        events = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=tail, startFromHead=False)
    return [e["message"].rstrip("\n") for e in events.get("events", [])]


def command_outputs(ssm: Any, document: str, commit: str | None, limit: int = 20) -> list[LogSection]:
    """Per-instance output of the newest deploy command of `commit` (any, when None)."""
    with doing(f"listing commands of document {document}"):
        commands = ssm.list_commands(Filters=[{"key": "DocumentName", "value": document}], MaxResults=limit)["Commands"]
    for command in commands:
        if command.get("DocumentName") != document:
            continue  # the filter is the service's; keep the guarantee here too
        if commit is None or command.get("Parameters", {}).get("release") == [commit]:
            sections = []
            for instance in command.get("InstanceIds", []):
                result = invocation(ssm, command["CommandId"], instance)
                text = (result.output + ("\n" + result.error if result.error else "")).strip()
                sections.append(LogSection(f"SSM {command['CommandId']} on {instance}: {result.status}", text.splitlines()))
            return sections
    return []


def execution_logs(
    clients: Any, pipeline: str, execution_id: str, document: str | None, tail: int = 50, actions_client: Any | None = None
) -> list[LogSection]:
    sections = []
    commit = commit_of(clients.codepipeline, pipeline, execution_id)
    for action in action_executions(actions_client or clients.codepipeline, pipeline, execution_id):
        build_id = ((action.get("output") or {}).get("executionResult") or {}).get("externalExecutionId")
        title = f"{action.get('stageName')}/{action.get('actionName')}: {action.get('status')}"
        if build_id and ":" in build_id:
            sections.append(LogSection(title, build_log(clients.codebuild, clients.logs, build_id, tail)))
        else:
            summary = ((action.get("output") or {}).get("executionResult") or {}).get("externalExecutionSummary", "")
            sections.append(LogSection(title, [summary] if summary else []))
    if document:
        sections.extend(command_outputs(clients.ssm, document, commit))
    return sections


# ------------------------------------------------------------------ bootstrap


@dataclass
class BootstrapResult:
    bucket: str
    key_alias: str
    key_arn: str
    changed: list[str]
    login: str
    stack_init: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
DEFAULT_ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]}


def _ensure_bucket(s3: Any, bucket: str, region: str) -> list[str]:
    with doing(f"checking bucket {bucket}"):
        if _unless_absent(lambda: s3.head_bucket(Bucket=bucket), "404", "NoSuchBucket", "NotFound") is not None:
            return []
    args: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
        args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    with doing(f"creating bucket {bucket}"):
        s3.create_bucket(**args)
    return [f"created bucket {bucket}"]


def _harden_bucket(s3: Any, bucket: str) -> list[str]:
    """Versioning, no public access, default encryption, TLS only: whatever is missing."""
    from policy.iam import tls_only_statement  # not at module level: the Release function ships without policy/

    changed: list[str] = []
    with doing(f"configuring bucket {bucket}"):
        if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            changed.append("enabled versioning")
        current = _unless_absent(lambda: s3.get_public_access_block(Bucket=bucket), "NoSuchPublicAccessBlockConfiguration")
        if (current or {}).get("PublicAccessBlockConfiguration") != PUBLIC_ACCESS_BLOCK:
            s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
            changed.append("blocked public access")
        encryption = _unless_absent(lambda: s3.get_bucket_encryption(Bucket=bucket), "ServerSideEncryptionConfigurationNotFoundError")
        if not (encryption or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules"):
            s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=DEFAULT_ENCRYPTION)
            changed.append("enabled default encryption")
        wanted = {"Version": "2012-10-17", "Statement": [tls_only_statement(f"arn:aws:s3:::{bucket}")]}
        existing = _unless_absent(lambda: s3.get_bucket_policy(Bucket=bucket), "NoSuchBucketPolicy")
        if existing is None or json.loads(existing["Policy"]) != wanted:
            s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(wanted))
            changed.append("set TLS-only bucket policy")
    return changed


def _ensure_key(kms: Any, alias: str) -> tuple[str, list[str]]:
    """The ARN of the key behind `alias`, created (with rotation) when the alias is free."""
    with doing(f"looking up KMS alias {alias}"):
        aliases = [a for page in kms.get_paginator("list_aliases").paginate() for a in page["Aliases"]]
    match = next((a for a in aliases if a["AliasName"] == alias), None)
    if match and match.get("TargetKeyId"):
        with doing(f"reading KMS key of {alias}"):
            return kms.describe_key(KeyId=match["TargetKeyId"])["KeyMetadata"]["Arn"], []
    with doing("creating the KMS key for Pulumi secrets"):
        key = kms.create_key(Description="devprod: Pulumi secrets provider", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
        kms.enable_key_rotation(KeyId=key["KeyId"])
        kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    return key["Arn"], [f"created KMS key {alias}"]


def bootstrap(s3: Any, kms: Any, *, region: str, bucket: str, key_alias: str) -> BootstrapResult:
    """Create (or confirm) the state bucket and secrets key; idempotent, lists what it changed."""
    alias = key_alias if key_alias.startswith("alias/") else f"alias/{key_alias}"
    changed = _ensure_bucket(s3, bucket, region) + _harden_bucket(s3, bucket)
    key_arn, created = _ensure_key(kms, alias)
    return BootstrapResult(
        bucket=bucket,
        key_alias=alias,
        key_arn=key_arn,
        changed=changed + created,
        login=f"pulumi login 's3://{bucket}?region={region}'",
        stack_init=f"pulumi stack init <stack> --secrets-provider 'awskms://{alias}?region={region}'",
    )
