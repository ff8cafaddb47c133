"""The pipeline's Release action, a Lambda function that runs no repository code.

It takes the release tree the Test stage built (`release.tar.gz` inside the
stage's output artifact), publishes it once as `releases/<sha>.tar.gz` with
its checksum beside it (S26: the bucket refuses a second write), sends the
deploy document with that checksum to this stack's production instances and
follows the command. CodePipeline re-invokes the function with the
continuation token it returned until the command ends, so one deploy may
outlast a single invocation's 15-minute cap; the deadline is in the token.
On timeout the command is cancelled and the action fails.

Settings come from the function's environment (set by DeployPipeline, never
by a pipeline variable): ARTIFACT_BUCKET, RELEASE_PREFIX, DOCUMENT_NAME,
TARGET_STACK, LOG_GROUP, DEPLOY_TIMEOUT (seconds), POLL_SECONDS, BATCH_SIZE,
LIVE_RELEASE_PARAMETER, and behind a load balancer TARGET_GROUP_ARN and
TARGET_PORT (each batch leaves the target group while it switches).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from devprod.aws import AwsProblem, Clients, doing
from devprod.contracts import describe_target
from devprod.errors import BadInput
from devprod.ops import (
    AlbTraffic,
    SsmRunner,
    put_back,
    production_instances,
    rollback_target,
    record_live_release,
    release_checksum,
)
from devprod.rollout import DONE, RETURN_GRACE_SECONDS, Rollout, RolloutError, advance

COMMIT = re.compile(r"^[0-9a-f]{40}$")
RELEASE_MEMBER = "release.tar.gz"
# put_object sends the release in one request: multipart parts carry no
# If-None-Match, so the bucket policy refuses them under releases/ (S26).
SINGLE_PUT_LIMIT = 5 * 1024**3


class ReleaseError(Exception):
    """The release cannot be published or deployed; str() is the one-line reason shown in the pipeline."""


@dataclass(frozen=True)
class Settings:
    pipeline: str
    bucket: str
    prefix: str
    document: str
    stack: str
    log_group: str | None
    timeout: int
    poll: int
    batch: int = 1
    live_parameter: str | None = None
    target_group: str | None = None
    target_port: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        missing = [k for k in ("PIPELINE_NAME", "ARTIFACT_BUCKET", "DOCUMENT_NAME", "TARGET_STACK") if not env.get(k)]
        if missing:
            raise ReleaseError(f"the function's environment lacks {', '.join(missing)}")
        return cls(
            pipeline=env["PIPELINE_NAME"],
            bucket=env["ARTIFACT_BUCKET"],
            prefix=env.get("RELEASE_PREFIX", "releases"),
            document=env["DOCUMENT_NAME"],
            stack=env["TARGET_STACK"],
            log_group=env.get("LOG_GROUP") or None,
            timeout=int(env.get("DEPLOY_TIMEOUT", "2100")),
            poll=int(env.get("POLL_SECONDS", "60")),
            batch=max(1, int(env.get("BATCH_SIZE", "1"))),
            live_parameter=env.get("LIVE_RELEASE_PARAMETER") or None,
            target_group=env.get("TARGET_GROUP_ARN") or None,
            target_port=_target_port(env),
        )


def _target_port(env: Mapping[str, str]) -> int:
    if not env.get("TARGET_GROUP_ARN"):
        return 0
    text = env.get("TARGET_PORT", "")
    if not (text.isdigit() and 0 < int(text) < 65536):
        raise ReleaseError(f"the function's environment sets TARGET_GROUP_ARN with TARGET_PORT={text!r}, not a port")
    return int(text)


@dataclass
class Progress:
    """What the continuation token carries between invocations: the execution and the rollout's state."""

    execution: str
    commit: str
    sha256: str
    rollout: Rollout


# CodePipeline keeps at most this much of a continuation token (its API model).
TOKEN_LIMIT = 2048
# All of a Lambda action's invocations together get one hour; keep margin for reporting.
ACTION_BUDGET_SECONDS = 3300


def batch_timeout(settings: "Settings", hosts: int) -> float:
    """Seconds each batch (and the rollback) may take, so all of them fit the action's hour."""
    batches = -(-hosts // settings.batch)
    if batches == 1:
        return float(settings.timeout)
    # Every batch, then a rollback; behind a load balancer each may add a host's return to it.
    grace = RETURN_GRACE_SECONDS if settings.target_group else 0.0
    share = ACTION_BUDGET_SECONDS / (batches + 1) - grace
    if share < 120:
        raise ReleaseError(
            f"{hosts} hosts in batches of {settings.batch} cannot be deployed within CodePipeline's hour "
            f"(each batch would get {share:.0f}s); raise pipeline.batch"
        )
    return float(min(settings.timeout, share))


# ------------------------------------------------------------------ what the pipeline asked for

RELEASE_STAGE, TEST_STAGE = "Release", "Test"
EXECUTION_ID = re.compile(r"^[0-9a-f-]{36}$")
COMMAND_ID = re.compile(r"^[0-9a-f-]{36}$")
INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")


@dataclass(frozen=True)
class Assignment:
    """The work the pipeline itself says its Release action is doing now."""

    execution: str
    commit: str
    location: dict[str, str]
    # For a rollback execution: the earlier execution whose release it puts back.
    rollback_of: str | None = None


def assigned_work(pipeline_client: Any, pipeline: str) -> Assignment:
    """Read the pipeline's own state, never the event: anyone allowed to invoke the
    function could send a made-up job, but only the pipeline can put an execution
    in its Release stage with a commit and a Test output."""
    with doing(f"reading the state of pipeline {pipeline}"):
        stages = pipeline_client.get_pipeline_state(name=pipeline).get("stageStates", [])
    latest = next((s.get("latestExecution") or {} for s in stages if s.get("stageName") == RELEASE_STAGE), {})
    if latest.get("status") != "InProgress":
        raise ReleaseError(f"pipeline {pipeline} is not running its {RELEASE_STAGE} stage; refusing a job it did not start")
    execution = latest["pipelineExecutionId"]
    with doing(f"reading execution {execution} of {pipeline}"):
        detail = pipeline_client.get_pipeline_execution(pipelineName=pipeline, pipelineExecutionId=execution)
    if detail["pipelineExecution"].get("executionType") == "ROLLBACK":
        return _rollback_work(pipeline_client, pipeline, execution, detail["pipelineExecution"])
    with doing(f"reading execution {execution} of {pipeline}"):
        pages = pipeline_client.get_paginator("list_action_executions").paginate(
            pipelineName=pipeline, filter={"pipelineExecutionId": execution}
        )
        actions = [a for page in pages for a in page.get("actionExecutionDetails", [])]
    commit = _commit_variable(detail)
    tested = [a for a in actions if a.get("stageName") == TEST_STAGE and a.get("status") == "Succeeded"]
    artifacts = (tested[0].get("output") or {}).get("outputArtifacts", []) if tested else []
    if not artifacts:
        raise ReleaseError(f"execution {execution} of {pipeline} has no successful {TEST_STAGE} output")
    where = artifacts[0]["s3location"]
    return Assignment(execution, str(commit), {"bucketName": where["bucket"], "objectKey": where["key"]})


def _commit_variable(detail: Mapping[str, Any]) -> str | None:
    return next((v.get("resolvedValue") for v in detail["pipelineExecution"].get("variables", [])
                 if v.get("name") == "COMMIT_SHA"), None)


def _rollback_work(pipeline_client: Any, pipeline: str, execution: str, detail: Mapping[str, Any]) -> Assignment:
    """CodePipeline rolls Release back by running it again for the last execution that succeeded;
    the commit is that execution's, read from the pipeline, never from the job."""
    target = (detail.get("rollbackMetadata") or {}).get("rollbackTargetPipelineExecutionId") or ""
    if not EXECUTION_ID.match(target):
        raise ReleaseError(f"rollback execution {execution} of {pipeline} names no execution to return to")
    with doing(f"reading execution {target} of {pipeline}"):
        commit = _commit_variable(pipeline_client.get_pipeline_execution(pipelineName=pipeline, pipelineExecutionId=target))
    if not commit or not COMMIT.match(commit):
        raise ReleaseError(f"execution {target} of {pipeline}, the rollback target, has no full COMMIT_SHA ({commit!r})")
    return Assignment(execution, commit, {}, rollback_of=target)


def parse_token(token: str) -> Progress:
    """A continuation token, checked field by field (it comes back through the event)."""
    try:
        data = json.loads(token)
        rollout = Rollout.from_json(json.dumps(data.pop("rollout")))
        progress = Progress(rollout=rollout, **data)
        valid = (
            EXECUTION_ID.match(progress.execution) and COMMIT.match(progress.commit)
            and re.fullmatch(r"[0-9a-f]{64}", progress.sha256)
            and rollout.release == progress.commit and rollout.checksum == progress.sha256
            and all(INSTANCE_ID.match(i) for i in rollout.hosts)
            and (rollout.handle is None or COMMAND_ID.match(rollout.handle))
        )
    except (TypeError, ValueError, KeyError, AttributeError, RolloutError):
        valid = False
    if not valid:
        raise ReleaseError("the continuation token is not one this function wrote")
    return progress


def token_of(progress: Progress) -> str:
    token = json.dumps({"execution": progress.execution, "commit": progress.commit, "sha256": progress.sha256,
                        "rollout": json.loads(progress.rollout.to_json())}, separators=(",", ":"))
    if len(token) > TOKEN_LIMIT:
        raise ReleaseError(f"the rollout's state ({len(token)} bytes) outgrew CodePipeline's continuation token")
    return token


# ------------------------------------------------------------------ publish


def checksum_line(digest: str, commit: str) -> str:
    """The .sha256 object's text: the digest and the artifact it names (sha256sum format)."""
    return f"{digest}  {commit}.tar.gz\n"


def extract_release(s3: Any, location: Mapping[str, str], workdir: str) -> tuple[str, str]:
    """Download the Test stage's artifact, take release.tar.gz out of it; (path, sha256)."""
    archive = os.path.join(workdir, "artifact.zip")
    with doing(f"reading the Test stage's artifact s3://{location['bucketName']}/{location['objectKey']}"):
        s3.download_file(location["bucketName"], location["objectKey"], archive)
    target = os.path.join(workdir, RELEASE_MEMBER)
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(archive) as bundle, bundle.open(RELEASE_MEMBER) as source, open(target, "wb") as out:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ReleaseError(f"the Test stage's artifact holds no {RELEASE_MEMBER} ({exc})") from None
    if os.path.getsize(target) > SINGLE_PUT_LIMIT:
        raise ReleaseError(f"{RELEASE_MEMBER} is over 5 GiB; S3 takes one request up to that size")
    return target, digest.hexdigest()


def _put_once(s3: Any, bucket: str, key: str, body: Any, **extra: Any) -> bool:
    """PutObject that never overwrites: False when the object already exists."""
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*", **extra)
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        with doing(f"publishing s3://{bucket}/{key}"):
            raise
    return True


def published_checksum(s3: Any, settings: Settings, commit: str) -> str | None:
    """The checksum published with an existing release; None when it was never written."""
    try:
        return release_checksum(s3, settings.bucket, commit, settings.prefix, required=False)
    except BadInput as exc:
        raise ReleaseError(str(exc)) from None


def publish(s3: Any, settings: Settings, commit: str, tarball: str, digest: str) -> tuple[str, bool]:
    """Publish the release once; (the digest the host must verify, whether this call published it).

    A release that already exists (a re-run of the same commit) is never
    replaced: its published checksum is the truth and is what gets deployed.
    """
    key = f"{settings.prefix}/{commit}.tar.gz"
    checksum = base64.b64encode(bytes.fromhex(digest)).decode()
    with open(tarball, "rb") as body:
        fresh = _put_once(s3, settings.bucket, key, body, ChecksumSHA256=checksum, ContentType="application/gzip")
    if fresh:
        if not _put_once(s3, settings.bucket, f"{key}.sha256", checksum_line(digest, commit).encode(),
                         ContentType="text/plain"):
            raise ReleaseError(f"{key}.sha256 existed before its release was published; an operator must look at it")
        return digest, True
    existing = published_checksum(s3, settings, commit)
    if existing is None:
        raise ReleaseError(
            f"{key} exists without its checksum object; releases are immutable, so this needs an operator "
            "(see the README: a release without its checksum)"
        )
    return existing, False


# ------------------------------------------------------------------ deploy


def start_deploy(clients: Clients, settings: Settings, work: Assignment, digest: str, now: float) -> Progress:
    """The rollout of the release over this stack's production hosts, back to the live release on failure."""
    instances = sorted(production_instances(clients.ec2, settings.stack))
    if not instances:
        raise ReleaseError(f"no running instance tagged {describe_target(settings.stack)}")
    previous, previous_sum = rollback_target(clients.ssm, settings.live_parameter, work.commit)
    traffic = _traffic(clients, settings)
    if traffic is not None and len(instances) > settings.batch:
        # A host an interrupted rollout left out goes back first (the group and port are
        # Pulumi's, not an operator's guess); until healthy, no batch leaves for it.
        missing = traffic.unregistered(instances)
        if missing:
            print(f"{', '.join(missing)} not registered in {settings.target_group}: registering again")
            traffic.attach(missing)
    rollout = Rollout.new(work.commit, digest, instances, batch=settings.batch,
                          timeout=batch_timeout(settings, len(instances)),
                          previous=previous, previous_checksum=previous_sum)
    return Progress(work.execution, work.commit, digest, rollout)


def _traffic(clients: Clients, settings: Settings) -> AlbTraffic | None:
    """The target group each batch leaves while it switches; None without a load balancer."""
    if not settings.target_group:
        return None
    return AlbTraffic(clients.elbv2, settings.target_group, settings.target_port)


def follow(
    clients: Clients, settings: Settings, progress: Progress, clock: Callable[[], float], sleep: Callable[[float], None]
) -> str | None:
    """Step the rollout for up to POLL_SECONDS; None while it runs, else 'Success' or the failure summary."""
    runner = SsmRunner(clients.ssm, settings.document, settings.log_group, comment="devprod pipeline")
    traffic = _traffic(clients, settings)
    stop = clock() + settings.poll
    while True:
        try:
            progress.rollout = advance(progress.rollout, runner, clock(), traffic)
        except (AwsProblem, RolloutError) as exc:
            # The action fails and its token is gone: hosts this rollout took out go back now.
            said = put_back(traffic, progress.rollout.detached)
            raise ReleaseError(f"{exc}; {said}" if said else str(exc)) from None
        if progress.rollout.finished:
            return "Success" if progress.rollout.phase == DONE else progress.rollout.summary()
        if clock() >= stop:
            return None
        sleep(min(5, max(0.0, stop - clock())))


# ------------------------------------------------------------------ the action


def run(
    job: Mapping[str, Any], settings: Settings, clients: Clients, clock: Callable[[], float], sleep: Callable[[float], None]
) -> tuple[str, Any]:
    """One invocation: ('continue', token) | ('success', variables); raises ReleaseError on failure."""
    data = job["data"]
    assignment = assigned_work(clients.codepipeline, settings.pipeline)
    token = data.get("continuationToken")
    if token:
        progress = _resume(clients, settings, assignment, token)
    elif assignment.rollback_of:
        progress = _roll_back_to(clients, settings, assignment, data, clock())
    else:
        claimed = _claimed(data)
        if claimed != (assignment.commit, assignment.location):
            raise ReleaseError(
                f"the job names {claimed[0]} at {claimed[1]}, but execution {assignment.execution} of "
                f"{settings.pipeline} is releasing {assignment.commit}; refusing"
            )
        progress = _publish_and_send(clients, settings, assignment, clock())
    outcome = follow(clients, settings, progress, clock, sleep)
    if outcome is None:
        return "continue", token_of(progress)
    if outcome != "Success":
        raise ReleaseError(outcome)  # the rollout's summary: the failing host, its reason, what was put back
    # Only now does every host serve it: a host that boots from here on deploys it (S26 checksum with it).
    record_live_release(clients.ssm, settings.live_parameter, progress.commit, progress.sha256)
    last = progress.rollout.handle or ""
    return "success", {"RELEASE_SHA256": progress.sha256, "COMMAND_ID": last, "HOSTS": ",".join(progress.rollout.hosts)}


def _resume(clients: Clients, settings: Settings, assignment: Assignment, token: str) -> Progress:
    """The token's rollout, only once everything it says that AWS can confirm agrees: anyone who
    may invoke the function could hand in a token, so it picks no release, host or rollback target."""
    progress = parse_token(token)
    rollout = progress.rollout
    if progress.execution != assignment.execution:
        raise ReleaseError(f"the token is for execution {progress.execution}, the pipeline runs {assignment.execution}")
    if progress.commit != assignment.commit:
        raise ReleaseError(f"the token names {progress.commit}, but execution {assignment.execution} releases {assignment.commit}")
    if rollout.finished or rollout.action != "deploy":
        raise ReleaseError("the continuation token is not one this function wrote")  # it only hands on running rollouts
    if rollout.batch != settings.batch:  # how many hosts it may take out of the balancer at once
        raise ReleaseError(f"the token's batch of {rollout.batch} is not the function's BATCH_SIZE {settings.batch}")
    if published_checksum(clients.s3, settings, progress.commit) != progress.sha256:
        raise ReleaseError(f"the token's checksum is not the one published with {progress.commit}")
    if rollout.hosts != sorted(production_instances(clients.ec2, settings.stack)):
        raise ReleaseError(f"the token's hosts are not this stack's running production instances ({describe_target(settings.stack)})")
    expected = rollback_target(clients.ssm, settings.live_parameter, progress.commit)
    if (rollout.previous, rollout.previous_checksum) != tuple(expected):
        raise ReleaseError(f"the token's rollback target is not the live release recorded in {settings.live_parameter}")
    if rollout.handle:
        _check_command(clients, settings, rollout)
    return progress


def _check_command(clients: Clients, settings: Settings, rollout: Rollout) -> None:
    """The running command is this document, for the release this phase sends, to the hosts it names."""
    with doing(f"reading command {rollout.handle}"):
        commands = clients.ssm.list_commands(CommandId=rollout.handle).get("Commands", [])
    if [c.get("DocumentName") for c in commands] != [settings.document]:
        raise ReleaseError(f"the token names command {rollout.handle}, which is not a deploy of {settings.document}")
    rolling_back = rollout.phase == "rolling-back"
    release = (rollout.previous if rolling_back else rollout.release) or ""
    parameters = commands[0].get("Parameters") or {}
    if parameters.get("release") != [release] or parameters.get("action") != ["rollback" if rolling_back else "deploy"]:
        raise ReleaseError(f"the token names command {rollout.handle}, which did not send what the rollout says")


def _roll_back_to(clients: Clients, settings: Settings, work: Assignment, data: Mapping[str, Any],
                  now: float) -> Progress:
    """A rollback execution (a failed Release or a bake alarm): roll out the release of the
    execution it returns to. That release was published and verified then; nothing is published now."""
    claimed = _claimed_commit(data)
    if claimed is not None and claimed != work.commit:
        raise ReleaseError(f"the job names {claimed}, but rollback execution {work.execution} returns to {work.commit}")
    digest = published_checksum(clients.s3, settings, work.commit)
    if digest is None:
        raise ReleaseError(f"rollback target {work.commit} (execution {work.rollback_of}) has no published release")
    return start_deploy(clients, settings, work, digest, now)


def _claimed_commit(data: Mapping[str, Any]) -> str | None:
    """The commit a rollback job names, when it names one that looks like a sha."""
    try:
        commit = json.loads(data["actionConfiguration"]["configuration"]["UserParameters"])["commit"]
    except (KeyError, TypeError, ValueError):
        return None
    return commit if isinstance(commit, str) and COMMIT.match(commit) else None


def _claimed(data: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    try:
        commit = json.loads(data["actionConfiguration"]["configuration"]["UserParameters"])["commit"]
        (artifact,) = data["inputArtifacts"]
        location = dict(artifact["location"]["s3Location"])
    except (KeyError, TypeError, ValueError):
        raise ReleaseError('the job must carry UserParameters {"commit": "<sha>"} and one input artifact') from None
    if not isinstance(commit, str) or not COMMIT.match(commit):
        raise ReleaseError(f"COMMIT_SHA {commit!r} is not a full 40-character git sha")
    return commit, location


def _publish_and_send(clients: Clients, settings: Settings, work: Assignment, now: float) -> Progress:
    if work.location["bucketName"] != settings.bucket:
        raise ReleaseError(f"the input artifact is in {work.location['bucketName']!r}, not the pipeline's bucket")
    workdir = tempfile.mkdtemp(prefix="release-")
    try:
        tarball, digest = extract_release(clients.s3, work.location, workdir)
        digest, _ = publish(clients.s3, settings, work.commit, tarball, digest)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return start_deploy(clients, settings, work, digest, now)


def handler(event: Mapping[str, Any], _context: Any = None, *, clients: Clients | None = None,
            clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
    """Lambda entry point: reports the outcome to CodePipeline, never raises for an expected failure."""
    job = event["CodePipeline.job"]
    clients = clients or Clients()
    pipeline = clients.codepipeline
    try:
        settings = Settings.from_env(os.environ)
        kind, value = run(job, settings, clients, clock, sleep)
    except (ReleaseError, AwsProblem) as exc:
        with doing(f"reporting the failure of job {job['id']}"):
            pipeline.put_job_failure_result(
                jobId=job["id"], failureDetails={"type": "JobFailed", "message": str(exc)[:4900]}
            )
        return
    with doing(f"reporting job {job['id']}"):
        if kind == "continue":
            pipeline.put_job_success_result(jobId=job["id"], continuationToken=value)
        else:
            pipeline.put_job_success_result(jobId=job["id"], outputVariables=value)
