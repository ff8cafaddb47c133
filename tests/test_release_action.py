"""The pipeline's Release action (devprod/release.py) run for real against moto's S3, EC2 and SSM.

moto has no CodePipeline job API and its server fails ListActionExecutions,
so every CodePipeline call (the pipeline state the function trusts, and
put_job_success_result / put_job_failure_result) goes to botocore's Stubber,
which also checks what the action reports. moto finishes every SSM command at once; the one test that
needs a command still running wraps moto's SSM client and answers
get_command_invocation with InProgress (said again there).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import uuid
import zipfile

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from components.production_service import deploy_document
from components.config import ProductionSettings
from devprod import release
from devprod.aws import Clients

pytestmark = pytest.mark.slow

COMMIT = hashlib.sha1(b"release-test").hexdigest()
REGION = "eu-central-1"


def tarball(text: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = text.encode()
        info = tarfile.TarInfo("server.js")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def artifact(member: bytes | None, name: str = "release.tar.gz") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        if member is not None:
            bundle.writestr(name, member)
    return buffer.getvalue()


class Recording:
    """moto's SSM client, keeping each SendCommand request and moto's answer status."""

    def __init__(self, ssm):
        self._ssm = ssm
        self.requests: list[dict] = []

    def __getattr__(self, name):
        return getattr(self._ssm, name)

    def send_command(self, **request):
        answer = self._ssm.send_command(**request)
        self.requests.append({**request, "status": answer["Command"]["Status"]})
        return answer


class World:
    """moto's AWS with a pipeline bucket, a tagged production host and the deploy document."""

    def __init__(self, endpoint: str, monkeypatch):
        self.clients = Clients(region=REGION, endpoint_url=endpoint)
        self.bucket = f"artifacts-{uuid.uuid4().hex[:10]}"
        self.stack = f"prod-{uuid.uuid4().hex[:6]}"
        s3 = self.clients.s3
        s3.create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        settings = ProductionSettings.model_validate({"startCommand": "node server.js"})
        self.document = f"deploy-{uuid.uuid4().hex[:8]}"
        self.clients.ssm.create_document(
            Name=self.document, Content=deploy_document(settings, self.bucket, "/devprod/prod/app/"),
            DocumentType="Command", DocumentFormat="JSON",
        )
        self.execution = str(uuid.uuid4())
        for key, value in {
            "PIPELINE_NAME": "Pipe",
            "ARTIFACT_BUCKET": self.bucket, "RELEASE_PREFIX": "releases", "DOCUMENT_NAME": self.document,
            "TARGET_STACK": self.stack, "LOG_GROUP": "/devprod/prod/deploy", "DEPLOY_TIMEOUT": "2100", "POLL_SECONDS": "60",
            "LIVE_RELEASE_PARAMETER": f"/devprod/{self.stack}/live-release",
        }.items():
            monkeypatch.setenv(key, value)
        self.ssm = Recording(self.clients.ssm)
        self.clients.use("ssm", self.ssm)
        self.pipeline = boto3.client("codepipeline", region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t")
        self.stub = Stubber(self.pipeline)
        self.clients.use("codepipeline", self.pipeline)

    def host(self) -> str:
        ec2 = self.clients.ec2
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        tags = [{"Key": "devprod:stack", "Value": self.stack}, {"Key": "devprod:role", "Value": "production"}]
        answer = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                   TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        return answer["Instances"][0]["InstanceId"]

    def upload(self, body: bytes) -> dict:
        key = f"MatsightDeployPipeli/release/{uuid.uuid4().hex[:7]}"
        self.clients.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        return {"bucketName": self.bucket, "objectKey": key}

    def job(self, location: dict | None = None, commit: str = COMMIT, token: str | None = None) -> dict:
        data = {
            "actionConfiguration": {"configuration": {"FunctionName": "f", "UserParameters": json.dumps({"commit": commit})}},
            "inputArtifacts": [{"name": "release", "location": {"type": "S3", "s3Location": location or {}}}],
        }
        if token:
            data["continuationToken"] = token
        return {"CodePipeline.job": {"id": str(uuid.uuid4()), "accountId": "123456789012", "data": data}}

    def expect_pipeline(self, location: dict | None, commit: str = COMMIT, stage_status: str = "InProgress",
                        with_actions: bool = True):
        """What the pipeline itself reports: its Release stage running this execution, its commit and Test output."""
        self.stub.add_response("get_pipeline_state", {"pipelineName": "Pipe", "stageStates": [
            {"stageName": "Test", "latestExecution": {"pipelineExecutionId": self.execution, "status": "Succeeded"}},
            {"stageName": "Release", "latestExecution": {"pipelineExecutionId": self.execution, "status": stage_status}},
        ]}, {"name": "Pipe"})
        if stage_status != "InProgress" or not with_actions:
            return
        self.stub.add_response("get_pipeline_execution", {"pipelineExecution": {
            "pipelineName": "Pipe", "pipelineExecutionId": self.execution, "status": "InProgress",
            "variables": [{"name": "COMMIT_SHA", "resolvedValue": commit}]}},
            {"pipelineName": "Pipe", "pipelineExecutionId": self.execution})
        where = location or {"bucketName": self.bucket, "objectKey": "MatsightDeployPipeli/release/earlier"}
        self.stub.add_response("list_action_executions", {"actionExecutionDetails": [{
            "pipelineExecutionId": self.execution, "stageName": "Test", "actionName": "TestAndPackage", "status": "Succeeded",
            "output": {"outputArtifacts": [{"name": "release", "s3location": {
                "bucket": where.get("bucketName", ""), "key": where.get("objectKey", "")}}]}}]},
            {"pipelineName": "Pipe", "filter": {"pipelineExecutionId": self.execution}})

    def expect_success(self, event, **params):
        self.stub.add_response("put_job_success_result", {}, {"jobId": event["CodePipeline.job"]["id"], **params})

    def expect_failure(self, event, message):
        self.stub.add_response("put_job_failure_result", {}, {
            "jobId": event["CodePipeline.job"]["id"], "failureDetails": {"type": "JobFailed", "message": message}})

    def run(self, event, **kwargs):
        if "clock" not in kwargs:  # the function follows a command for POLL_SECONDS: on a virtual clock here
            now = [1000.0]
            kwargs.update(clock=lambda: now[0], sleep=lambda seconds: now.__setitem__(0, now[0] + seconds))
        with self.stub:
            release.handler(event, clients=self.clients, **kwargs)
            self.stub.assert_no_pending_responses()

    def object(self, key: str) -> bytes:
        return self.clients.s3.get_object(Bucket=self.bucket, Key=f"releases/{key}")["Body"].read()

    def versions(self, key: str) -> int:
        listed = self.clients.s3.list_object_versions(Bucket=self.bucket, Prefix=f"releases/{key}").get("Versions", [])
        return len([v for v in listed if v["Key"] == f"releases/{key}"])

    def sent(self) -> list[dict]:
        """The SendCommand requests moto accepted for this world's document, in order.

        Read from a recording wrapper around moto's SSM client rather than from
        list_commands: moto 5.2's server reports other commands' instance ids
        there once several tests have sent commands (seen here)."""
        return [c for c in self.ssm.requests if c["DocumentName"] == self.document]


@pytest.fixture
def world(moto_endpoint, aws_env, monkeypatch):
    for key, value in aws_env.items():
        monkeypatch.setenv(key, value)
    return World(moto_endpoint, monkeypatch)


def test_publishes_once_then_deploys_with_the_published_checksum(world):
    instance = world.host()
    body = tarball("v1")
    digest = hashlib.sha256(body).hexdigest()
    event = world.job(world.upload(artifact(body)))
    world.expect_pipeline(event_location(event))
    world.expect_success(event, outputVariables={"RELEASE_SHA256": digest, "COMMAND_ID": ANY, "HOSTS": instance})
    world.run(event)
    # Every host took it: a host that boots now deploys this release.
    parameter = world.clients.ssm.get_parameter(Name=f"/devprod/{world.stack}/live-release")["Parameter"]["Value"]
    assert parameter == f"{COMMIT} {digest}"
    assert world.object(f"{COMMIT}.tar.gz") == body
    assert world.object(f"{COMMIT}.tar.gz.sha256").decode() == f"{digest}  {COMMIT}.tar.gz\n"
    (command,) = world.sent()
    assert command["DocumentName"] == world.document and command["InstanceIds"] == [instance]
    assert command["Parameters"] == {"release": [COMMIT], "action": ["deploy"], "checksum": [digest]}


def test_a_rerun_never_replaces_a_published_release(world):
    world.host()
    first = tarball("v1")
    event = world.job(world.upload(artifact(first)))
    world.expect_pipeline(event_location(event))
    world.expect_success(event, outputVariables=ANY)
    world.run(event)
    # The same commit built again (different bytes, as builds are): the published one stays and is deployed.
    again = world.job(world.upload(artifact(tarball("v1 rebuilt"))))
    world.expect_pipeline(event_location(again))
    world.expect_success(again, outputVariables={"RELEASE_SHA256": hashlib.sha256(first).hexdigest(), "COMMAND_ID": ANY,
                                                  "HOSTS": ANY})
    world.run(again)
    assert world.object(f"{COMMIT}.tar.gz") == first
    assert world.versions(f"{COMMIT}.tar.gz") == 1 and world.versions(f"{COMMIT}.tar.gz.sha256") == 1
    assert [c["Parameters"]["checksum"] for c in world.sent()] == [[hashlib.sha256(first).hexdigest()]] * 2


def test_s3_itself_refuses_the_overwrite(world, tmp_path):
    """publish() straight against moto's S3: the second write is refused by S3 (If-None-Match), not skipped."""
    body = tarball("v1")
    local = tmp_path / "release.tar.gz"
    local.write_bytes(body)
    settings = release.Settings.from_env(os.environ)
    digest = hashlib.sha256(body).hexdigest()
    assert release.publish(world.clients.s3, settings, COMMIT, str(local), digest) == (digest, True)
    local.write_bytes(b"poisoned")
    assert release.publish(world.clients.s3, settings, COMMIT, str(local), "0" * 64) == (digest, False)
    assert world.object(f"{COMMIT}.tar.gz") == body
    with pytest.raises(world.clients.s3.exceptions.ClientError) as refused:
        world.clients.s3.put_object(Bucket=world.bucket, Key=f"releases/{COMMIT}.tar.gz", Body=b"x", IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"


@pytest.mark.parametrize(
    "case, message",
    [
        ("short-commit", "COMMIT_SHA '0000000' is not a full 40-character git sha"),
        ("no-member", "the Test stage's artifact holds no release.tar.gz ("),
        ("other-bucket", "the input artifact is in 'elsewhere', not the pipeline's bucket"),
        ("no-host", "no running instance tagged devprod:stack="),
        ("checksum-missing", f"releases/{COMMIT}.tar.gz exists without its checksum object"),
        ("checksum-names-another", f"does not read '<sha256>  {COMMIT}.tar.gz'"),
    ],
)
def test_failures_are_reported_to_the_pipeline_and_send_nothing(world, case, message):
    if case != "no-host":
        world.host()
    location = world.upload(artifact(tarball("v1"), name="other.tar.gz" if case == "no-member" else "release.tar.gz"))
    commit = "0000000" if case == "short-commit" else COMMIT
    if case == "other-bucket":
        location = {**location, "bucketName": "elsewhere"}
    if case.startswith("checksum"):
        world.clients.s3.put_object(Bucket=world.bucket, Key=f"releases/{COMMIT}.tar.gz", Body=b"old", IfNoneMatch="*")
    if case == "checksum-names-another":
        world.clients.s3.put_object(Bucket=world.bucket, Key=f"releases/{COMMIT}.tar.gz.sha256",
                                    Body=f"{'a' * 64}  {'b' * 40}.tar.gz\n".encode())
    event = world.job(location, commit=commit)
    world.expect_pipeline(location, commit=commit, with_actions=True)
    reported = []
    world.stub.add_response("put_job_failure_result", {}, None)
    original = world.pipeline.put_job_failure_result

    def capture(**kwargs):
        reported.append(kwargs["failureDetails"]["message"])
        return original(**kwargs)

    world.pipeline.put_job_failure_result = capture
    world.run(event)
    assert len(reported) == 1 and message in reported[0], reported
    assert world.sent() == []


def event_location(event) -> dict:
    return event["CodePipeline.job"]["data"]["inputArtifacts"][0]["location"]["s3Location"]


@pytest.mark.parametrize(
    "forgery, message",
    [
        ("other-commit", "is releasing"),
        ("other-artifact", "is releasing"),
        ("stage-idle", "is not running its Release stage; refusing a job it did not start"),
        ("bad-token", "the continuation token is not one this function wrote"),
        ("foreign-command", "the token's checksum is not the one published"),
    ],
)
def test_a_job_the_pipeline_did_not_start_is_refused_and_changes_nothing(world, forgery, message):
    """Anyone allowed to invoke the function could send a made-up job: the function trusts
    only what the pipeline reports (its Release stage, the commit, the Test output)."""
    world.host()
    real = world.upload(artifact(tarball("tested")))
    forged = world.upload(artifact(tarball("never tested")))
    if forgery == "other-commit":
        event = world.job(real, commit="f" * 40)
        world.expect_pipeline(real)
    elif forgery == "other-artifact":
        event = world.job(forged)
        world.expect_pipeline(real)
    elif forgery == "stage-idle":
        event = world.job(real)
        world.expect_pipeline(real, stage_status="Succeeded")
    else:
        other = world.clients.ssm.send_command(DocumentName="AWS-RunShellScript", InstanceIds=[world.host()],
                                               Parameters={"commands": ["true"]})["Command"]["CommandId"]
        from devprod.rollout import Rollout

        rollout = Rollout.new(COMMIT, "a" * 64, ["i-0123456789abcdef0"])
        rollout.handle, rollout.running, rollout.updated, rollout.deadline = other, ["i-0123456789abcdef0"], ["i-0123456789abcdef0"], 1.0
        state = json.loads(rollout.to_json())
        if forgery == "bad-token":
            state["handle"] = "x; rm"
        token = json.dumps({"execution": world.execution, "commit": COMMIT, "sha256": "a" * 64, "rollout": state})
        event = world.job(token=token)
        world.expect_pipeline(None)
    world.expect_failure(event, ANY)
    reported = []
    original = world.pipeline.put_job_failure_result
    world.pipeline.put_job_failure_result = lambda **kw: (reported.append(kw["failureDetails"]["message"]), original(**kw))[1]
    world.run(event)
    assert len(reported) == 1 and message in reported[0], reported
    assert world.sent() == []
    listed = world.clients.s3.list_objects_v2(Bucket=world.bucket, Prefix="releases/").get("KeyCount", 0)
    assert listed == 0


class StillRunning:
    """moto's SSM, except that the command never finishes (moto ends every command at once) and
    cancel_command is recorded, not forwarded (moto's server answers it with HTTP 500)."""

    def __init__(self, ssm):
        self._ssm = ssm
        self.cancelled: list[str] = []

    def __getattr__(self, name):
        return getattr(self._ssm, name)

    def get_command_invocation(self, **kwargs):
        return {"Status": "InProgress", "StandardOutputContent": "", "StandardErrorContent": ""}

    def cancel_command(self, **kwargs):
        self.cancelled.append(kwargs["CommandId"])
        return {}


def test_a_long_deploy_continues_then_times_out_is_cancelled_and_rolled_back(world):
    instance = world.host()
    running = StillRunning(world.ssm)
    world.clients.use("ssm", running)
    now = [1000.0]
    clock, sleep = (lambda: now[0]), (lambda seconds: now.__setitem__(0, now[0] + seconds))
    event = world.job(world.upload(artifact(tarball("v1"))))
    world.expect_pipeline(event_location(event))
    tokens = []
    world.stub.add_response("put_job_success_result", {}, None)
    original = world.pipeline.put_job_success_result
    world.pipeline.put_job_success_result = lambda **kw: (tokens.append(kw["continuationToken"]), original(**kw))[1]
    world.run(event, clock=clock, sleep=sleep)
    (token,) = tokens
    progress = json.loads(token)
    assert progress["commit"] == COMMIT and progress["rollout"]["deadline"] == 1000.0 + 2100
    assert now[0] == pytest.approx(1060.0)  # followed for POLL_SECONDS, then handed back
    deploy_command = progress["rollout"]["handle"]
    # Past the deadline: cancelled, then the host is told to roll back (its state is unknown).
    now[0] = 1000.0 + 2100 + 1
    again = world.job(token=token)
    world.expect_pipeline(None, with_actions=True)
    world.stub.add_response("put_job_success_result", {}, None)
    world.run(again, clock=clock, sleep=sleep)
    assert running.cancelled == [deploy_command]
    assert [(c["Parameters"]["action"], c["InstanceIds"]) for c in world.sent()] == [(["deploy"], [instance]), (["rollback"], [instance])]
    # The rollback never finishes either (this SSM never ends a command): said loudly, the action fails.
    now[0] += 2200
    last = world.job(token=tokens[-1])
    world.expect_pipeline(None, with_actions=True)
    reported = []
    world.stub.add_response("put_job_failure_result", {}, None)
    failure = world.pipeline.put_job_failure_result
    world.pipeline.put_job_failure_result = lambda **kw: (reported.append(kw["failureDetails"]["message"]), failure(**kw))[1]
    world.run(last, clock=clock, sleep=sleep)
    (message,) = reported
    assert message.startswith(f"deploy {COMMIT} failed: host {instance} did not finish within 2100s (command cancelled)")
    assert f"ROLLBACK FAILED: host {instance}: did not finish" in message


# ------------------------------------------------------------------ several hosts (#15)

OLD = hashlib.sha1(b"the release every host serves").hexdigest()
OLD_SUM = "c" * 64


class FailsOn:
    """moto's SSM (which ends every command at once with Success), except that the deploy
    command fails on one instance, as a release failing its health gate there would."""

    def __init__(self, recording: Recording, instance: str):
        self._ssm, self.instance = recording, instance

    def __getattr__(self, name):
        return getattr(self._ssm, name)

    def get_command_invocation(self, **kwargs):
        sent = next(r for r in self._ssm.requests if self._ssm_id(r) == kwargs["CommandId"])
        if kwargs["InstanceId"] == self.instance and sent["Parameters"]["action"] == ["deploy"]:
            return {"Status": "Failed", "StandardOutputContent": "starting green\n",
                    "StandardErrorContent": "gate: GET /health answered 500 for 60s\n"}
        return self._ssm.get_command_invocation(**kwargs)

    def _ssm_id(self, request):
        return request["id"]


class Ids(Recording):
    def send_command(self, **request):
        answer = self._ssm.send_command(**request)
        self.requests.append({**request, "id": answer["Command"]["CommandId"]})
        return answer


def three_hosts(world) -> list[str]:
    hosts = sorted(world.host() for _ in range(3))
    world.ssm = Ids(world.clients.ssm)
    world.clients.ssm.put_parameter(Name=f"/devprod/{world.stack}/live-release", Value=f"{OLD} {OLD_SUM}", Type="String")
    return hosts


def test_three_hosts_one_at_a_time_then_the_live_release_is_recorded(world):
    hosts = three_hosts(world)
    world.clients.use("ssm", world.ssm)
    body = tarball("v2")
    event = world.job(world.upload(artifact(body)))
    world.expect_pipeline(event_location(event))
    world.expect_success(event, outputVariables={"RELEASE_SHA256": ANY, "COMMAND_ID": ANY, "HOSTS": ",".join(hosts)})
    world.run(event)
    assert [(c["Parameters"]["action"], c["InstanceIds"]) for c in world.sent()] == [(["deploy"], [h]) for h in hosts]
    value = world.clients.ssm.get_parameter(Name=f"/devprod/{world.stack}/live-release")["Parameter"]["Value"]
    assert value == f"{COMMIT} {hashlib.sha256(body).hexdigest()}"


class Refusing:
    """moto's elbv2, whose `refused` call (from the `after`-th on) answers Throttling."""

    def __init__(self, elbv2, refused, after):
        self.elbv2, self.refused, self.after, self.calls = elbv2, refused, after, 0

    def __getattr__(self, name):
        method = getattr(self.elbv2, name)
        if name != self.refused:
            return method

        def call(**kwargs):
            self.calls += 1
            if self.calls >= self.after:
                raise ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, name)
            return method(**kwargs)
        return call


def behind_a_target_group(world, monkeypatch, hosts):
    ec2, elbv2 = world.clients.ec2, world.clients.elbv2
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    group = elbv2.create_target_group(Name=f"t{uuid.uuid4().hex[:8]}", Protocol="HTTP", Port=8000, VpcId=vpc,
                                      TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": h, "Port": 8000} for h in hosts])
    monkeypatch.setenv("TARGET_GROUP_ARN", group)
    monkeypatch.setenv("TARGET_PORT", "8000")
    return elbv2, group


def test_behind_a_target_group_each_host_leaves_it_and_an_aws_error_puts_it_back(world, monkeypatch):
    """The Release function with TARGET_GROUP_ARN: every host leaves and returns around its own
    command; when AWS refuses a call mid-rollout the action fails and its token is gone, so the
    host that was out is registered again at once, and the failure says so."""
    hosts = three_hosts(world)
    world.clients.use("ssm", world.ssm)
    elbv2, group = behind_a_target_group(world, monkeypatch, hosts)
    event = world.job(world.upload(artifact(tarball("v2"))))
    world.expect_pipeline(event_location(event))
    world.expect_success(event, outputVariables={"RELEASE_SHA256": ANY, "COMMAND_ID": ANY, "HOSTS": ",".join(hosts)})
    world.run(event)
    assert [c["InstanceIds"] for c in world.sent()] == [[h] for h in hosts]
    health = elbv2.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
    assert sorted(d["Target"]["Id"] for d in health) == hosts
    # Again, with DescribeTargetHealth refused once host 1 is out (calls: every host registered?,
    # the others healthy?, host 1 drained? <- refused).
    world.clients.use("elbv2", Refusing(elbv2, "describe_target_health", after=3))
    again = world.job(world.upload(artifact(tarball("v3"))), commit="c" * 40)
    world.expect_pipeline(event_location(again), commit="c" * 40)
    reported = []
    world.stub.add_response("put_job_failure_result", {}, None)
    failure = world.pipeline.put_job_failure_result
    world.pipeline.put_job_failure_result = lambda **kw: (reported.append(kw["failureDetails"]["message"]), failure(**kw))[1]
    world.run(again)
    assert len(reported) == 1 and "Throttling" in reported[0], reported
    assert reported[0].endswith(f"; {hosts[0]} put back in the load balancer"), reported[0]
    health = elbv2.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
    assert sorted(d["Target"]["Id"] for d in health) == hosts


def test_a_host_an_interrupted_rollout_left_out_is_registered_again_first(world, monkeypatch, capsys):
    hosts = three_hosts(world)
    world.clients.use("ssm", world.ssm)
    elbv2, group = behind_a_target_group(world, monkeypatch, hosts)
    elbv2.deregister_targets(TargetGroupArn=group, Targets=[{"Id": hosts[1], "Port": 8000}])
    event = world.job(world.upload(artifact(tarball("v2"))))
    world.expect_pipeline(event_location(event))
    world.expect_success(event, outputVariables={"RELEASE_SHA256": ANY, "COMMAND_ID": ANY, "HOSTS": ",".join(hosts)})
    world.run(event)
    assert f"{hosts[1]} not registered in {group}: registering again" in capsys.readouterr().out
    health = elbv2.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
    assert sorted(d["Target"]["Id"] for d in health) == hosts


def test_host_2_fails_host_1_is_rolled_back_host_3_never_touched(world):
    hosts = three_hosts(world)
    world.clients.use("ssm", FailsOn(world.ssm, hosts[1]))
    event = world.job(world.upload(artifact(tarball("v2"))))
    world.expect_pipeline(event_location(event))
    reported = []
    world.stub.add_response("put_job_failure_result", {}, None)
    original = world.pipeline.put_job_failure_result
    world.pipeline.put_job_failure_result = lambda **kw: (reported.append(kw["failureDetails"]["message"]), original(**kw))[1]
    world.run(event)
    sent = [(c["Parameters"]["action"][0], c["InstanceIds"], c["Parameters"]["release"][0]) for c in world.sent()]
    assert sent == [("deploy", [hosts[0]], COMMIT), ("deploy", [hosts[1]], COMMIT),
                    ("rollback", [hosts[0], hosts[1]], OLD)]
    assert all(hosts[2] not in ids for _, ids, _ in sent)
    (message,) = reported
    assert message.startswith(f"deploy {COMMIT} failed: host {hosts[1]} failed: Failed: gate: GET /health answered 500")
    assert f"rolled back {hosts[0]}, {hosts[1]} to {OLD}" in message and message.endswith(f"not touched: {hosts[2]}")
    # The live release stays the one every host serves.
    value = world.clients.ssm.get_parameter(Name=f"/devprod/{world.stack}/live-release")["Parameter"]["Value"]
    assert value == f"{OLD} {OLD_SUM}"


def test_a_rollback_execution_rolls_out_the_release_of_the_execution_it_returns_to(world):
    """CodePipeline's rollback (onFailure ROLLBACK or a bake alarm) runs Release for an earlier
    execution; the function reads that execution's commit and never publishes."""
    hosts = three_hosts(world)
    world.clients.use("ssm", world.ssm)
    digest = hashlib.sha256(b"old").hexdigest()
    world.clients.s3.put_object(Bucket=world.bucket, Key=f"releases/{OLD}.tar.gz", Body=b"old")
    world.clients.s3.put_object(Bucket=world.bucket, Key=f"releases/{OLD}.tar.gz.sha256", Body=f"{digest}  {OLD}.tar.gz\n".encode())
    target = str(uuid.uuid4())
    world.stub.add_response("get_pipeline_state", {"pipelineName": "Pipe", "stageStates": [
        {"stageName": "Release", "latestExecution": {"pipelineExecutionId": world.execution, "status": "InProgress"}}]},
        {"name": "Pipe"})
    world.stub.add_response("get_pipeline_execution", {"pipelineExecution": {
        "pipelineName": "Pipe", "pipelineExecutionId": world.execution, "status": "InProgress", "executionType": "ROLLBACK",
        "rollbackMetadata": {"rollbackTargetPipelineExecutionId": target}}},
        {"pipelineName": "Pipe", "pipelineExecutionId": world.execution})
    world.stub.add_response("get_pipeline_execution", {"pipelineExecution": {
        "pipelineName": "Pipe", "pipelineExecutionId": target, "status": "Succeeded",
        "variables": [{"name": "COMMIT_SHA", "resolvedValue": OLD}]}}, {"pipelineName": "Pipe", "pipelineExecutionId": target})
    event = world.job(world.upload(artifact(tarball("whatever the job carries"))), commit=OLD)
    world.expect_success(event, outputVariables={"RELEASE_SHA256": digest, "COMMAND_ID": ANY, "HOSTS": ",".join(hosts)})
    world.run(event)
    assert [(c["Parameters"]["release"], c["Parameters"]["checksum"]) for c in world.sent()] == [([OLD], [digest])] * 3
    assert world.clients.s3.list_objects_v2(Bucket=world.bucket, Prefix=f"releases/{COMMIT}").get("KeyCount") == 0


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda t, w: t["rollout"].update(phase="done"), "not one this function wrote"),
        (lambda t, w: t["rollout"].update(hosts=t["rollout"]["hosts"][:1], updated=t["rollout"]["updated"][:1],
                                          running=t["rollout"]["running"][:1]), "not this stack's running production"),
        (lambda t, w: t["rollout"].update(previous="d" * 40), "rollback target is not the live release"),
        (lambda t, w: t.update(commit="e" * 40) or t["rollout"].update(release="e" * 40), "releases " + COMMIT),
        (lambda t, w: t.update(sha256="f" * 64) or t["rollout"].update(checksum="f" * 64), "checksum is not the one published"),
        (lambda t, w: t["rollout"].update(handle=w.other_command()), "which did not send what the rollout says"),
        # More hosts at once than configured would take more of them out of the load balancer.
        (lambda t, w: t["rollout"].update(batch=2), "batch of 2 is not the function's BATCH_SIZE 1"),
    ],
    ids=["finished", "fewer-hosts", "other-previous", "other-commit", "other-checksum", "other-command", "other-batch"],
)
def test_a_tampered_token_is_refused_before_anything_is_sent_or_recorded(world, tamper, message):
    """The attacker review's case: a token picks no release, host, rollback target or outcome."""
    hosts = three_hosts(world)
    running = StillRunning(world.ssm)
    world.clients.use("ssm", running)
    event = world.job(world.upload(artifact(tarball("v2"))))
    world.expect_pipeline(event_location(event))
    tokens = []
    world.stub.add_response("put_job_success_result", {}, None)
    original = world.pipeline.put_job_success_result
    world.pipeline.put_job_success_result = lambda **kw: (tokens.append(kw["continuationToken"]), original(**kw))[1]
    world.run(event)
    token = json.loads(tokens[0])
    assert token["rollout"]["hosts"] == hosts and token["rollout"]["previous"] == OLD

    def other_command():
        return world.clients.ssm.send_command(DocumentName=world.document, InstanceIds=[hosts[0]], Parameters={
            "release": [OLD], "action": ["deploy"], "checksum": [OLD_SUM]})["Command"]["CommandId"]

    world.other_command = other_command
    tamper(token, world)
    sent_before = len(world.sent())
    forged = world.job(token=json.dumps(token))
    world.expect_pipeline(None, with_actions=True)
    reported = []
    world.stub.add_response("put_job_failure_result", {}, None)
    failure = world.pipeline.put_job_failure_result
    world.pipeline.put_job_failure_result = lambda **kw: (reported.append(kw["failureDetails"]["message"]), failure(**kw))[1]
    world.run(forged)
    assert len(reported) == 1 and message in reported[0], reported
    assert len(world.sent()) == sent_before
    value = world.clients.ssm.get_parameter(Name=f"/devprod/{world.stack}/live-release")["Parameter"]["Value"]
    assert value == f"{OLD} {OLD_SUM}"


@pytest.mark.parametrize("port", ["", "0", "eighty", "70000"])
def test_a_target_group_needs_its_port(port):
    env = {"PIPELINE_NAME": "P", "ARTIFACT_BUCKET": "b", "DOCUMENT_NAME": "d", "TARGET_STACK": "prod",
           "TARGET_GROUP_ARN": "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/t/0123", "TARGET_PORT": port}
    with pytest.raises(release.ReleaseError, match=f"TARGET_PORT={port!r}, not a port"):
        release.Settings.from_env(env)
    settings = release.Settings.from_env({**env, "TARGET_PORT": "8000"})
    assert (settings.target_group, settings.target_port) == (env["TARGET_GROUP_ARN"], 8000)
    assert release.Settings.from_env({k: v for k, v in env.items() if not k.startswith("TARGET_G")}).target_group is None
