"""Production operations behind `devprod status/logs/health/deploy/rollback/bootstrap`.

Every function takes the clients it uses (see devprod.aws.Clients) and returns
plain data; the CLI renders it. AWS errors surface as devprod.aws.AwsProblem.
"""

from __future__ import annotations

import json
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


def _commit_of(pipeline_client: Any, pipeline: str, execution_id: str) -> str | None:
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
                commit=_commit_of(pipeline_client, pipeline, execution_id),
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


def release_checksum(s3: Any, bucket: str, release: str, prefix: str = "releases", *, required: bool = True) -> str | None:
    """The published digest of a release, from its immutable .sha256 object (which must name it).

    A release that was never published is an error, or None when not `required`.
    """
    key = f"{prefix}/{release}.tar.gz.sha256"
    try:
        with doing(f"reading s3://{bucket}/{key}"):
            text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except AwsProblem as exc:
        if "NoSuchKey" in str(exc) or "Not Found" in str(exc) or "404" in str(exc):
            if not required:
                return None
            raise BadInput(f"release {release} is not published (no s3://{bucket}/{key})") from None
        raise
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
    commit = _commit_of(clients.codepipeline, pipeline, execution_id)
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


def _unless_absent(call: Callable[[], Any], *codes: str) -> Any:
    """The call's answer, or None when AWS answers that the thing does not exist (any other error propagates)."""
    try:
        return call()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in codes:
            return None
        raise


def bootstrap(s3: Any, kms: Any, *, region: str, bucket: str, key_alias: str) -> BootstrapResult:
    """Create (or confirm) the state bucket and secrets key; idempotent, lists what it changed."""
    changed: list[str] = []
    with doing(f"checking bucket {bucket}"):
        exists = _unless_absent(lambda: s3.head_bucket(Bucket=bucket), "404", "NoSuchBucket", "NotFound") is not None
    if not exists:
        with doing(f"creating bucket {bucket}"):
            args: dict[str, Any] = {"Bucket": bucket}
            if region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": region}
            s3.create_bucket(**args)
        changed.append(f"created bucket {bucket}")

    with doing(f"configuring bucket {bucket}"):
        if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            changed.append("enabled versioning")
        block = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
        current = _unless_absent(lambda: s3.get_public_access_block(Bucket=bucket), "NoSuchPublicAccessBlockConfiguration")
        if (current or {}).get("PublicAccessBlockConfiguration") != block:
            s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block)
            changed.append("blocked public access")
        encryption = _unless_absent(
            lambda: s3.get_bucket_encryption(Bucket=bucket), "ServerSideEncryptionConfigurationNotFoundError"
        )
        if not (encryption or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules"):
            s3.put_bucket_encryption(
                Bucket=bucket,
                ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]},
            )
            changed.append("enabled default encryption")
        from policy.iam import tls_only_statement  # not at module level: the Release function ships without policy/

        wanted = {"Version": "2012-10-17", "Statement": [tls_only_statement(f"arn:aws:s3:::{bucket}")]}
        existing = _unless_absent(lambda: s3.get_bucket_policy(Bucket=bucket), "NoSuchBucketPolicy")
        if existing is None or json.loads(existing["Policy"]) != wanted:
            s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(wanted))
            changed.append("set TLS-only bucket policy")

    alias = key_alias if key_alias.startswith("alias/") else f"alias/{key_alias}"
    with doing(f"looking up KMS alias {alias}"):
        aliases = [a for page in kms.get_paginator("list_aliases").paginate() for a in page["Aliases"]]
    match = next((a for a in aliases if a["AliasName"] == alias), None)
    if match and match.get("TargetKeyId"):
        with doing(f"reading KMS key of {alias}"):
            key_arn = kms.describe_key(KeyId=match["TargetKeyId"])["KeyMetadata"]["Arn"]
    else:
        with doing("creating the KMS key for Pulumi secrets"):
            key = kms.create_key(Description="devprod: Pulumi secrets provider", KeyUsage="ENCRYPT_DECRYPT")
            key_arn = key["KeyMetadata"]["Arn"]
            kms.enable_key_rotation(KeyId=key["KeyMetadata"]["KeyId"])
            kms.create_alias(AliasName=alias, TargetKeyId=key["KeyMetadata"]["KeyId"])
        changed.append(f"created KMS key {alias}")
    return BootstrapResult(
        bucket=bucket,
        key_alias=alias,
        key_arn=key_arn,
        changed=changed,
        login=f"pulumi login 's3://{bucket}?region={region}'",
        stack_init=f"pulumi stack init <stack> --secrets-provider 'awskms://{alias}?region={region}'",
    )
