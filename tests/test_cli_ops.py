"""Operator commands through typer's runner against moto's server on 127.0.0.1.

moto 5.2's server answers ListActionExecutions with HTTP 500 and reports every
SSM command as Success. Those calls (and CodeBuild's BatchGetBuilds for the
log location) are served by botocore's Stubber with responses shaped by the
botocore service model; each test says which call is stubbed. Everything else
is a real HTTP call to moto.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
import time
import uuid
from datetime import datetime, timezone

import boto3
import pytest
from botocore.stub import Stubber
from typer.testing import CliRunner

import devprod.cli as cli
from components.config import ProductionSettings
from components.production_service import deploy_document
from devprod import ops
from devprod.aws import AwsProblem
from devprod.errors import BadInput

runner = CliRunner()
SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "ab" * 32
from tests.aws_clients import REGION, Mixed, client, offline  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def env(aws_env, monkeypatch, tmp_path):
    for key in [k for k in os.environ if k.startswith(("AWS_", "DEVPROD_"))]:
        monkeypatch.delenv(key)
    for key, value in aws_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("PATH", f"{tmp_path}/nobin:/usr/bin:/bin")  # no pulumi, no session-manager-plugin
    return aws_env


def inject(monkeypatch, **services):
    original = cli._clients

    def patched(*args):
        clients = original(*args)
        for name, value in services.items():
            clients.use(name, value(clients) if callable(value) and not hasattr(value, "meta") else value)
        return clients

    monkeypatch.setattr(cli, "_clients", patched)


def run(*args, input=None):
    return runner.invoke(cli.app, list(args), input=input)


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def pipeline(env):
    iam, cp = client("iam", env), client("codepipeline", env)
    name = f"P{uuid.uuid4().hex[:10]}"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "codepipeline.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    action = lambda stage, category, provider, conf, **io: {  # noqa: E731
        "name": stage, "actionTypeId": {"category": category, "owner": "AWS", "provider": provider, "version": "1"},
        "configuration": conf, **io}
    cp.create_pipeline(pipeline={
        "name": name, "roleArn": role, "artifactStore": {"type": "S3", "location": "bucket"},
        "pipelineType": "V2", "executionMode": "QUEUED", "variables": [{"name": "COMMIT_SHA", "defaultValue": "0000000"}],
        "stages": [
            {"name": "Source", "actions": [action("Source", "Source", "S3", {"S3Bucket": "bucket", "S3ObjectKey": "source/app.zip"}, outputArtifacts=[{"name": "source"}])]},
            {"name": "Build", "actions": [action("BuildAndTest", "Build", "CodeBuild", {"ProjectName": "build"}, inputArtifacts=[{"name": "source"}])]},
            {"name": "Deploy", "actions": [action("DeployToProduction", "Build", "CodeBuild", {"ProjectName": "deploy"}, inputArtifacts=[{"name": "source"}])]},
        ]})
    ids = []
    for commit in ("aaaaaaa1", "bbbbbbb2"):
        ids.append(cp.start_pipeline_execution(name=name, variables=[{"name": "COMMIT_SHA", "value": commit}])["pipelineExecutionId"])
        time.sleep(0.05)
    return {"name": name, "ids": ids, "client": cp}


def stub_actions(execution_ids, statuses=("Succeeded", "Succeeded", "Failed"), build_ids=("build:1", "deploy:2")):
    """Stubbed ListActionExecutions (moto answers it with HTTP 500)."""
    stubbed = offline("codepipeline")
    stubber = Stubber(stubbed)
    for execution_id in execution_ids:
        now = datetime.now(timezone.utc)
        details = [
            {"pipelineExecutionId": execution_id, "stageName": "Source", "actionName": "Source", "startTime": now,
             "status": statuses[0], "output": {"executionResult": {"externalExecutionSummary": "source/app.zip v1"}}},
            {"pipelineExecutionId": execution_id, "stageName": "Build", "actionName": "BuildAndTest", "startTime": now,
             "status": statuses[1], "output": {"executionResult": {"externalExecutionId": build_ids[0]}}},
            {"pipelineExecutionId": execution_id, "stageName": "Deploy", "actionName": "DeployToProduction", "startTime": now,
             "status": statuses[2], "output": {"executionResult": {"externalExecutionId": build_ids[1]}}},
        ]
        stubber.add_response("list_action_executions", {"actionExecutionDetails": details},
                             {"pipelineName": stubber_any(), "filter": {"pipelineExecutionId": execution_id}})
    stubber.activate()
    return stubbed, stubber


def stub_state(stubbed, stubber, frozen=False):
    """Stubbed GetPipelineState (moto lacks it): the Release stage's inbound transition."""
    transition = {"enabled": not frozen, **({"disabledReason": "incident 7 (by bob)"} if frozen else {})}
    stubber.add_response("get_pipeline_state", {"stageStates": [{"stageName": "Release", "inboundTransitionState": transition}]})
    return stubbed


def stubber_any():
    from botocore.stub import ANY

    return ANY


class App(http.server.BaseHTTPRequestHandler):
    mode = "ok"

    def do_GET(self):  # noqa: N802
        if self.mode == "slow":
            time.sleep(2)
        status = 500 if self.mode == "error" else 200
        body = json.dumps({"status": "ok", "release": "cafe123"}).encode()
        self.send_response(status)
        if self.mode == "behind-nginx":  # what deploy.sh's nginx adds to every answer
            self.send_header("X-Devprod-Slot", "green")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def app_server():
    servers = []

    def start(mode="ok"):
        handler = type("H", (App,), {"mode": mode})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/health"

    yield start
    for server in servers:
        server.shutdown()


# ------------------------------------------------------------------ status


def test_status_json_lists_executions_commits_stages_and_the_live_release(env, pipeline, monkeypatch, app_server):
    newest_first = list(reversed(pipeline["ids"]))
    stubbed, stubber = stub_actions(newest_first)
    stub_state(stubbed, stubber, frozen=True)
    inject(monkeypatch, codepipeline=lambda c: Mixed(c.codepipeline, stubbed, {"list_action_executions", "get_pipeline_state"}))
    result = run("status", "--pipeline", pipeline["name"], "--health-url", app_server(), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [e["id"] for e in data["executions"]] == newest_first
    assert [e["commit"] for e in data["executions"]] == ["bbbbbbb2", "aaaaaaa1"]
    assert data["executions"][0]["trigger"] == "StartPipelineExecution"
    assert data["executions"][0]["stages"] == {"Source": "Succeeded", "Build": "Succeeded", "Deploy": "Failed"}
    assert data["production"]["healthy"] is True and data["production"]["release"] == "cafe123"
    assert data["freeze"]["frozen"] is True and data["freeze"]["reason"] == "incident 7 (by bob)"
    stubber.assert_no_pending_responses()


def test_status_table_for_people(env, pipeline, monkeypatch):
    stubbed, stubber = stub_actions(list(reversed(pipeline["ids"])))
    stub_state(stubbed, stubber)
    inject(monkeypatch, codepipeline=lambda c: Mixed(c.codepipeline, stubbed, {"list_action_executions", "get_pipeline_state"}))
    result = run("status", "--pipeline", pipeline["name"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["execution", "status", "commit", "started", "UTC", "took"]
    newest = lines.index(next(l for l in lines if l.startswith(pipeline["ids"][1])))
    assert lines[newest].split()[1:3] == ["Succeeded", "bbbbbbb2"] or lines[newest].split()[2] == "bbbbbbb2"
    assert lines[newest + 1] == "    Source Succeeded, Build Succeeded, Deploy Failed (by StartPipelineExecution)"
    assert lines[-2].startswith("deploys: open (Release takes new executions")
    assert lines[-1] == "production: unknown (pass --health-url or --deploy-log-group)"
    # A pipe gets plain lines: no box characters, rows that fit 80 columns.
    assert not set("─━│┃┌┐└┘┏┓┗┛") & set(result.stdout), result.stdout
    assert all(len(line) <= 80 for line in lines), lines


def test_status_unknown_pipeline_is_one_line_exit_3(env):
    result = run("status", "--pipeline", "NoSuchPipeline")
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines() == [
        "error: listing executions of pipeline NoSuchPipeline: AWS answered PipelineNotFoundException: "
        "Account '123456789012' does not have a pipeline with name 'NoSuchPipeline'"
    ]


def test_status_without_a_pipeline_name_exits_2(env):
    result = run("status")
    assert result.exit_code == 2 and "pass --pipeline, set DEVPROD_PIPELINE" in result.stderr


def test_no_credentials_is_one_line_exit_3(env, monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = run("status", "--pipeline", "P")
    assert result.exit_code == 3, result.output
    assert "no AWS credentials found" in result.stderr and "Traceback" not in result.output


def test_throttling_after_retries_is_one_line(env, monkeypatch):
    stubbed = offline("codepipeline")
    stubber = Stubber(stubbed)
    for _ in range(5):  # standard mode: 5 attempts in all
        stubber.add_client_error("list_pipeline_executions", "ThrottlingException", "Rate exceeded", 400)
    stubber.activate()
    inject(monkeypatch, codepipeline=stubbed)
    result = run("status", "--pipeline", "P")
    assert result.exit_code == 3
    assert "AWS answered ThrottlingException: Rate exceeded (throttled even after retries" in result.stderr


# ------------------------------------------------------------------ health


def test_health_healthy_unhealthy_and_timeout(env, app_server):
    result = run("health", "--url", app_server("ok"))
    assert result.exit_code == 0 and "healthy: HTTP 200" in result.stdout and "release cafe123" in result.stdout
    result = run("health", "--url", app_server("error"), "--retries", "2", "--timeout", "1", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["healthy"] is False and data["status"] == 500 and data["attempts"] == 2
    started = time.monotonic()
    result = run("health", "--url", app_server("slow"), "--retries", "1", "--timeout", "0.5")
    assert result.exit_code == 1 and "UNHEALTHY" in result.stdout and "timed out" in result.stdout
    assert time.monotonic() - started < 2
    result = run("health", "--stack", "prod")
    assert result.exit_code == 2 and "DEVPROD_HEALTH_URL" in result.stderr


def test_health_and_status_show_the_slot_nginx_routes_to(env, pipeline, monkeypatch, app_server):
    url = app_server("behind-nginx")
    result = run("health", "--url", url)
    assert result.exit_code == 0 and "release cafe123, slot green" in result.stdout, result.stdout
    assert json.loads(run("health", "--url", url, "--json").stdout)["slot"] == "green"
    stubbed, _ = stub_actions(list(reversed(pipeline["ids"])))
    inject(monkeypatch, codepipeline=lambda c: Mixed(c.codepipeline, stubbed, {"list_action_executions"}))
    result = run("status", "--pipeline", pipeline["name"], "--health-url", url)
    assert "serving release cafe123 in slot green" in result.stdout, result.stdout


# ------------------------------------------------------------------ deploy / rollback


@pytest.fixture
def production(env):
    ec2, ssm = client("ec2", env), client("ssm", env)
    stack = f"s{uuid.uuid4().hex[:8]}"
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": [
        {"Key": "devprod:stack", "Value": stack}, {"Key": "devprod:role", "Value": "production"}]}])["Instances"][0]["InstanceId"]
    document = f"deploy-{stack}"
    ssm.create_document(Content=deploy_document(ProductionSettings(start_command="node server.js"), "bucket", "/p/"),
                        Name=document, DocumentType="Command", DocumentFormat="JSON")
    s3 = client("s3", env)
    bucket = f"artifacts-{stack}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    publish(s3, bucket, SHA)
    return {"stack": stack, "instance": instance, "document": document, "ssm": ssm, "bucket": bucket, "s3": s3}


def publish(s3, bucket, sha, archive=True, checksum=None):
    """A release as the Release action writes it: the archive and its .sha256 beside it."""
    if archive:
        s3.put_object(Bucket=bucket, Key=f"releases/{sha}.tar.gz", Body=b"release")
    if checksum is not False:
        s3.put_object(Bucket=bucket, Key=f"releases/{sha}.tar.gz.sha256", Body=(checksum or f"{DIGEST}  {sha}.tar.gz\n").encode())


def sent(production):
    return production["ssm"].list_commands(InstanceId=production["instance"])["Commands"]


def deploy_args(production, *extra):
    return ["--stack", production["stack"], "--document", production["document"],
            "--artifact-bucket", production["bucket"], "--poll", "0.1", *extra]


def test_deploy_sends_the_document_and_reports_success_in_plain_lines(env, production):
    result = run("deploy", "--release", SHA, "--yes", *deploy_args(production))
    assert result.exit_code == 0, result.output
    # Not a terminal: a plain heading per host on stdout, progress lines on stderr, no box characters.
    assert f"==> {production['instance']}: Success <==" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1] == "deploy succeeded on 1 host(s)"
    assert any(line.endswith(f" {production['instance']}: Success") for line in result.stderr.splitlines())
    assert not set("─━│┃┌┐└┘┏┓┗┛") & set(result.output), result.output
    (command,) = sent(production)
    assert command["DocumentName"] == production["document"]
    assert command["Parameters"] == {"release": [SHA], "action": ["deploy"], "checksum": [DIGEST]}


def test_deploy_resolves_a_unique_prefix_to_the_full_sha(env, production):
    publish(production["s3"], production["bucket"], SHA[:6] + "f" * 34)  # shares 6 digits, not 7
    result = run("deploy", "--release", SHA[:7].upper(), "--yes", *deploy_args(production))
    assert result.exit_code == 0, result.output
    (command,) = sent(production)
    assert command["Parameters"]["release"] == [SHA] and command["Parameters"]["checksum"] == [DIGEST]


OTHER = "0123456789abcdef0123456789abcdef0123ffff"


@pytest.mark.parametrize(
    "release, setup, message",
    [
        ("main", None, "--release 'main' is not a git sha: give 7 to 40 hex digits"),
        ("012345", None, "--release '012345' is not a git sha"),
        ("1111111", None, "--release 1111111: no release in s3://{bucket}/releases/ starts with 1111111"),
        ("0123456", "other", "--release 0123456 is ambiguous: 2 releases start with it ("
                             "0123456789abcdef0123456789abcdef01234567, 0123456789abcdef0123456789abcdef0123ffff)"),
        ("f" * 40, None, f"--release {'f' * 40} is not published: no s3://{{bucket}}/releases/{'f' * 40}.tar.gz"),
        ("f" * 40, "checksum-only", f"--release {'f' * 40} is not published: no s3://{{bucket}}/releases/{'f' * 40}.tar.gz"),
        ("f" * 40, "archive-only", f"--release {'f' * 40} is not published: no s3://{{bucket}}/releases/{'f' * 40}.tar.gz.sha256"),
        ("f" * 40, "wrong-checksum", "does not read '<sha256>  ffff"),
    ],
)
def test_deploy_refuses_a_release_that_is_not_published_and_sends_nothing(env, production, release, setup, message):
    s3, bucket = production["s3"], production["bucket"]
    if setup == "other":
        publish(s3, bucket, OTHER)
    elif setup == "checksum-only":
        publish(s3, bucket, release, archive=False)
    elif setup == "archive-only":
        publish(s3, bucket, release, checksum=False)
    elif setup == "wrong-checksum":
        publish(s3, bucket, release, checksum=f"{DIGEST}  {SHA}.tar.gz\n")
    result = run("deploy", "--release", release, "--yes", *deploy_args(production))
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert message.format(bucket=bucket) in line, line
    assert sent(production) == []


def test_release_prefixes_are_resolved_across_listing_pages(env, production):
    s3 = client("s3", env)
    publish(s3, production["bucket"], OTHER)
    pages = []

    def one_key_per_page(params, **_):
        params["MaxKeys"] = 1
        pages.append(params.get("ContinuationToken"))

    s3.meta.events.register("before-parameter-build.s3.ListObjectsV2", one_key_per_page)
    with pytest.raises(BadInput, match="ambiguous: 2 releases"):
        ops.resolve_release(s3, production["bucket"], SHA[:7])
    assert len(pages) >= 2


def test_without_a_terminal_deploy_and_rollback_need_yes_before_any_aws_call(env, production, monkeypatch):
    unreachable = ["--endpoint-url", "http://127.0.0.1:9"]  # any AWS call would fail with exit 3
    for command in (["deploy", "--release", SHA], ["rollback"]):
        result = run(*command, *deploy_args(production), *unreachable)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [
            f"error: {command[0]} asks for confirmation and standard input is not a terminal: pass --yes "
            "(or --dry-run to see the request)"]
    monkeypatch.setattr(cli, "_can_ask", lambda: True)
    result = run("rollback", *deploy_args(production), input="n\n")
    assert result.exit_code == 2 and "not confirmed; nothing sent" in result.stderr
    assert sent(production) == []


def test_deploy_dry_run_sends_nothing(env, production):
    result = run("deploy", "--release", SHA, "--dry-run", *deploy_args(production))
    assert result.exit_code == 0, result.output
    request = json.loads(result.stdout)["sendCommand"]
    assert request["InstanceIds"] == [production["instance"]] and request["MaxConcurrency"] == "1"
    assert sent(production) == []


def test_rollback_dry_run_targets_the_previous_release_or_a_published_one(env, production):
    result = run("rollback", "--dry-run", *deploy_args(production))
    assert json.loads(result.stdout)["sendCommand"]["Parameters"] == {"release": [""], "action": ["rollback"], "checksum": [""]}
    result = run("rollback", "--to", SHA[:7], "--dry-run", *deploy_args(production))
    assert json.loads(result.stdout)["sendCommand"]["Parameters"] == {"release": [SHA], "action": ["rollback"], "checksum": [DIGEST]}
    result = run("rollback", "--to", "abcdef1", "--dry-run", *deploy_args(production))
    assert result.exit_code == 2 and "--to abcdef1: no release in s3://" in result.stderr


def _stub_invocations(statuses):
    """Stubbed GetCommandInvocation: moto reports every command as Success."""
    stubbed = offline("ssm")
    stubber = Stubber(stubbed)
    for status in statuses:
        stubber.add_response("get_command_invocation", {"Status": status, "StandardOutputContent": f"deploy.sh said {status}", "StandardErrorContent": ""})
    stubber.activate()
    return stubbed


def test_deploy_failure_exits_1_with_the_host_output(env, production, monkeypatch):
    stubbed = _stub_invocations(["InProgress", "Failed"])
    inject(monkeypatch, ssm=lambda c: Mixed(c.ssm, stubbed, {"get_command_invocation"}))
    result = run("deploy", "--release", SHA, "--yes", *deploy_args(production))
    assert result.exit_code == 1
    assert "deploy.sh said Failed" in result.stdout
    assert f"failed: host {production['instance']} failed: Failed: deploy.sh said Failed" in result.stderr


def test_deploy_timeout_exits_4(env, production, monkeypatch):
    stubbed = _stub_invocations(["InProgress"] * 50)
    inject(monkeypatch, ssm=lambda c: Mixed(c.ssm, stubbed, {"get_command_invocation"}))
    result = run("deploy", "--release", SHA, "--yes", "--timeout", "0.3", *deploy_args(production))
    # Cancelled (moto's server refuses CancelCommand: noted, not fatal), then told to roll back,
    # which does not finish either: exit 4, and the failed rollback said.
    assert result.exit_code == 4, result.output
    assert f"host {production['instance']} did not finish within 0s (command cancelled)" in result.stderr
    assert "ROLLBACK FAILED" in result.stderr


def test_deploy_rolls_over_several_hosts_in_batches_and_records_the_live_release(env, production):
    ec2, ssm = client("ec2", env), production["ssm"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{"Key": "devprod:stack", "Value": production["stack"]}, {"Key": "devprod:role", "Value": "production"}]
    ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    parameter = f"/devprod/{production['stack']}/live-release"
    ssm.put_parameter(Name=parameter, Value=f"{'b' * 40} {'c' * 64}", Type="String")
    result = run("deploy", "--release", SHA[:8], "--yes", "--batch", "2", *deploy_args(production))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "deploy succeeded on 3 host(s)"
    commands = [c for c in ssm.list_commands()["Commands"] if c["DocumentName"] == production["document"]]
    # A batch of two, then the last host (moto's ListCommands misreports InstanceIds, so the
    # split is checked through --dry-run below).
    assert len(commands) == 2
    assert ssm.get_parameter(Name=parameter)["Parameter"]["Value"] == f"{SHA} {DIGEST}"
    result = run("deploy", "--release", SHA, "--dry-run", "--batch", "2", *deploy_args(production))
    assert [len(b) for b in json.loads(result.stdout)["batches"]] == [2, 1]
    # Several hosts: a rollback names its release (each host's "previous" may differ).
    result = run("rollback", "--yes", *deploy_args(production))
    assert result.exit_code == 2 and result.stderr.startswith(f"error: --to: 3 hosts serve {production['stack']}")


class Recorded:
    """An elbv2 client (moto's) whose target calls are noted in `calls`, in order, with the
    SSM commands sent in between (from the shared list)."""

    def __init__(self, elbv2, calls):
        self.elbv2, self.calls = elbv2, calls

    def __getattr__(self, name):
        method = getattr(self.elbv2, name)

        def call(**kwargs):
            if name != "describe_target_health":
                self.calls.append((name, [t["Id"] for t in kwargs["Targets"]], [t["Port"] for t in kwargs["Targets"]]))
            return method(**kwargs)
        return call


def test_behind_a_load_balancer_each_host_leaves_it_while_it_switches(env, production, monkeypatch):
    """moto's server answers the elbv2 calls (it deregisters at once: no `draining` state); the
    order of register/deregister around each SendCommand is what is checked."""
    ec2, elbv2, ssm = client("ec2", env), client("elbv2", env), production["ssm"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{"Key": "devprod:stack", "Value": production["stack"]}, {"Key": "devprod:role", "Value": "production"}]
    ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    hosts = sorted(i["InstanceId"] for r in ec2.describe_instances(Filters=[
        {"Name": "tag:devprod:stack", "Values": [production["stack"]]}])["Reservations"] for i in r["Instances"])
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    group = elbv2.create_target_group(Name=production["stack"], Protocol="HTTP", Port=8000, VpcId=vpc,
                                      TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": h, "Port": 8000} for h in hosts])
    monkeypatch.setenv("DEVPROD_TARGET_GROUP_ARN", group)
    monkeypatch.setenv("DEVPROD_APP_PORT", "8000")
    calls: list = []
    inject(monkeypatch, elbv2=lambda c: Recorded(c.elbv2, calls), ssm=lambda c: _Noting(c.ssm, calls))
    result = run("deploy", "--release", SHA, "--yes", *deploy_args(production))
    assert result.exit_code == 0, result.output
    dry = json.loads(run("deploy", "--release", SHA, "--dry-run", *deploy_args(production)).stdout)
    assert dry["leavesTargetGroup"] == group and sorted(sum(dry["batches"], [])) == hosts
    order = [(name, ids) for name, ids, _ in calls]
    assert [step for (h,) in dry["batches"] for step in (
        ("deregister_targets", [h]), ("send_command", [h]), ("register_targets", [h]))] == order
    assert {port for _, ids, ports in calls for port in ports} == {8000}
    health = elbv2.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
    assert sorted(d["Target"]["Id"] for d in health) == hosts  # every host back in the group
    monkeypatch.setenv("DEVPROD_APP_PORT", "eighty")
    result = run("deploy", "--release", SHA, "--yes", *deploy_args(production))
    assert result.exit_code == 2 and "DEVPROD_APP_PORT (or stack output production.appPort): 'eighty' is not a port" in result.stderr
    # Another stack's group (or a wrong port): the hosts are not registered there; nothing is sent.
    other = elbv2.create_target_group(Name=f"o{production['stack']}", Protocol="HTTP", Port=8000, VpcId=vpc,
                                      TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    monkeypatch.setenv("DEVPROD_TARGET_GROUP_ARN", other)
    monkeypatch.setenv("DEVPROD_APP_PORT", "8000")
    before = len(calls)
    result = run("deploy", "--release", SHA, "--yes", *deploy_args(production))
    assert result.exit_code == 2 and f"not registered in {other} on port 8000; check both" in result.stderr
    assert [c for c in calls[before:] if c[0] == "send_command"] == []


def test_a_rollout_stopped_by_aws_says_which_host_is_out_of_the_balancer(env, production, monkeypatch):
    ec2, elbv2 = client("ec2", env), client("elbv2", env)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{"Key": "devprod:stack", "Value": production["stack"]}, {"Key": "devprod:role", "Value": "production"}]
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    group = elbv2.create_target_group(Name=f"x{production['stack']}", Protocol="HTTP", Port=8000, VpcId=vpc,
                                      TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    hosts = [i["InstanceId"] for r in ec2.describe_instances(Filters=[
        {"Name": "tag:devprod:stack", "Values": [production["stack"]]}])["Reservations"] for i in r["Instances"]]
    elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": h, "Port": 8000} for h in hosts])
    monkeypatch.setenv("DEVPROD_TARGET_GROUP_ARN", group)
    monkeypatch.setenv("DEVPROD_APP_PORT", "8000")
    stubbed = offline("elbv2")
    dry = json.loads(run("deploy", "--release", SHA, "--dry-run", *deploy_args(production)).stdout)
    first, second = dry["batches"][0][0], dry["batches"][1][0]
    stubber = Stubber(stubbed)
    # Both registered; the other host is healthy (so the first may leave); then reading the drain is refused.
    stubber.add_response("describe_target_health", {"TargetHealthDescriptions": [
        {"Target": {"Id": h, "Port": 8000}, "TargetHealth": {"State": "healthy"}} for h in (first, second)]})
    stubber.add_response("describe_target_health", {"TargetHealthDescriptions": [
        {"Target": {"Id": second, "Port": 8000}, "TargetHealth": {"State": "healthy"}}]})
    stubber.add_client_error("describe_target_health", "AccessDenied", "not allowed to read target health")
    stubber.activate()
    inject(monkeypatch, elbv2=lambda c: Mixed(c.elbv2, stubbed, {"describe_target_health"}))
    result = run("deploy", "--release", SHA, "--yes", *deploy_args(production))
    assert result.exit_code == 3 and "AccessDenied" in result.stderr, result.output
    assert f"note: {first} put back in the load balancer" in result.stderr
    registered = elbv2.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
    assert sorted(d["Target"]["Id"] for d in registered) == sorted(hosts)  # moto: registered again
    assert "Traceback" not in result.output


def test_put_back_says_how_when_it_cannot():
    group = "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/t/0123456789abcdef"
    elbv2 = offline("elbv2")
    stubber = Stubber(elbv2)
    stubber.add_client_error("register_targets", "Throttling", "slow down")
    with stubber:
        said = ops.put_back(ops.AlbTraffic(elbv2, group, 8000), ["i-01"])
    assert said.startswith("i-01 may be out of the load balancer (putting back into the load balancer i-01")
    assert said.endswith(f"aws elbv2 register-targets --target-group-arn {group} --targets Id=i-01,Port=8000")
    assert ops.put_back(None, ["i-01"]) == "" and ops.put_back(ops.AlbTraffic(elbv2, group, 8000), []) == ""


def test_several_hosts_and_no_target_group_known_say_so(env, production):
    ec2 = client("ec2", env)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{"Key": "devprod:stack", "Value": production["stack"]}, {"Key": "devprod:role", "Value": "production"}]
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    result = run("deploy", "--release", SHA, "--dry-run", *deploy_args(production))
    assert "note: no target group known" in result.stderr and json.loads(result.stdout)["leavesTargetGroup"] is None


def test_alb_traffic_waits_out_the_drain_and_the_health_check():
    """Stubber for DescribeTargetHealth only: moto deregisters at once and finds every target
    healthy, so the `draining` and `initial` states real ALBs report are scripted here."""
    group = "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/t/0123456789abcdef"
    elbv2 = offline("elbv2")
    stubber = Stubber(elbv2)
    targets = [{"Id": "i-01", "Port": 8000}, {"Id": "i-02", "Port": 8000}]
    for states in (("draining", "unused"), ("unused", "unused"), ("initial", "healthy"), ("healthy", "healthy"),
                   ("unhealthy", "healthy")):
        stubber.add_response("describe_target_health", {"TargetHealthDescriptions": [
            {"Target": t, "TargetHealth": {"State": state}} for t, state in zip(targets, states)]},
            {"TargetGroupArn": group, "Targets": targets})
    stubber.add_client_error("describe_target_health", "AccessDenied", "not allowed")
    traffic = ops.AlbTraffic(elbv2, group, 8000)
    with stubber:
        assert [traffic.detached(["i-01", "i-02"]) for _ in range(2)] == [False, True]
        assert [traffic.attached(["i-01", "i-02"]) for _ in range(3)] == [False, True, False]
        with pytest.raises(AwsProblem, match="reading target health in .*AccessDenied"):
            traffic.attached(["i-01", "i-02"])


class _Noting:
    """An SSM client noting each SendCommand in the shared call list."""

    def __init__(self, ssm, calls):
        self.ssm, self.calls = ssm, calls

    def __getattr__(self, name):
        method = getattr(self.ssm, name)
        if name != "send_command":
            return method

        def send(**kwargs):
            self.calls.append(("send_command", kwargs["InstanceIds"], []))
            return method(**kwargs)
        return send


def test_deploy_bad_release_and_no_target(env, production):
    result = run("deploy", "--release", SHA, "--yes", "--stack", "nothing", "--document", production["document"])
    assert result.exit_code == 1 and "no running instance tagged devprod:stack=nothing" in result.stderr


# ------------------------------------------------------------------ logs


def _build_log_and_deploy_command(env, production):
    """A CodeBuild-style log stream of five lines in moto, and a deploy command of bbbbbbb2."""
    logs = client("logs", env)
    group, stream = f"/devprod/{production['stack']}/codebuild", "deploy/2"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
        {"timestamp": int(time.time() * 1000) + i, "message": f"line {i}"} for i in range(5)])
    production["ssm"].send_command(DocumentName=production["document"], InstanceIds=[production["instance"]],
                                   Parameters={"release": ["bbbbbbb2"], "action": ["deploy"]})
    return group, stream


def test_logs_defaults_to_the_latest_failed_and_a_missing_stream_is_exit_3(env, production, monkeypatch):
    group, stream = _build_log_and_deploy_command(env, production)
    # Stubbed: pipeline listing/detail (to make one execution Failed) and ListActionExecutions (moto: HTTP 500).
    pipeline = offline("codepipeline")
    stubber = Stubber(pipeline)
    stubber.add_response("list_pipeline_executions", {"pipelineExecutionSummaries": [
        {"pipelineExecutionId": "11111111-1111-1111-1111-111111111111", "status": "Succeeded"},
        {"pipelineExecutionId": "22222222-2222-2222-2222-222222222222", "status": "Failed"}]})
    stubber.add_response("get_pipeline_execution", {"pipelineExecution": {"pipelineExecutionId": "22222222-2222-2222-2222-222222222222",
                                                                          "variables": [{"name": "COMMIT_SHA", "resolvedValue": "bbbbbbb2"}]}})
    stubber.activate()
    actions, _ = stub_actions(["22222222-2222-2222-2222-222222222222"], build_ids=("build:1", "deploy:2"))
    # Stubbed: CodeBuild BatchGetBuilds (where the build's log stream is).
    codebuild = offline("codebuild")
    cb = Stubber(codebuild)
    cb.add_response("batch_get_builds", {"builds": [{"id": "build:1", "logs": {"groupName": group, "streamName": "missing"}}]})
    cb.add_response("batch_get_builds", {"builds": [{"id": "deploy:2", "logs": {"groupName": group, "streamName": stream}}]})
    cb.activate()
    inject(monkeypatch, codepipeline=Mixed(pipeline, actions, {"list_action_executions"}), codebuild=codebuild)
    result = run("logs", "--pipeline", "P", "--document", production["document"], "--tail", "3", "--json")
    assert result.exit_code == 3, result.output  # the build:1 stream does not exist in moto
    assert "reading log stream" in result.stderr and "ResourceNotFoundException" in result.stderr


def _stub_one_execution(monkeypatch, group, stream, execution="22222222-2222-2222-2222-222222222222"):
    """Stubbed: the execution's detail, its actions (moto: HTTP 500) and where CodeBuild logged."""
    pipeline = offline("codepipeline")
    stubber = Stubber(pipeline)
    stubber.add_response("get_pipeline_execution", {"pipelineExecution": {"pipelineExecutionId": execution,
                                                                          "variables": [{"name": "COMMIT_SHA", "resolvedValue": "bbbbbbb2"}]}})
    stubber.activate()
    actions, _ = stub_actions([execution], build_ids=("deploy:2", "deploy:2"))
    codebuild = offline("codebuild")
    cb = Stubber(codebuild)
    for _ in range(2):
        cb.add_response("batch_get_builds", {"builds": [{"id": "deploy:2", "logs": {"groupName": group, "streamName": stream}}]})
    cb.activate()
    inject(monkeypatch, codepipeline=Mixed(pipeline, actions, {"list_action_executions"}), codebuild=codebuild)
    return execution


def test_logs_for_people_are_plain_sections_in_a_pipe(env, production, monkeypatch):
    execution = _stub_one_execution(monkeypatch, *_build_log_and_deploy_command(env, production))
    result = run("logs", execution, "--pipeline", "P", "--document", production["document"], "--tail", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:4] == [f"execution {execution} of P", "==> Source/Source: Succeeded <==", "source/app.zip v1",
                         "==> Build/BuildAndTest: Succeeded <=="]
    assert lines[4:6] == ["line 3", "line 4"]
    assert not set("─━│┃┌┐└┘┏┓┗┛") & set(result.stdout), result.stdout


def test_logs_shows_build_tail_and_instance_output(env, production, monkeypatch):
    group, stream = _build_log_and_deploy_command(env, production)
    execution = _stub_one_execution(monkeypatch, group, stream)
    result = run("logs", execution, "--pipeline", "P", "--document", production["document"], "--tail", "3", "--json")
    assert result.exit_code == 0, result.output
    sections = json.loads(result.stdout)["sections"]
    titles = [s["title"] for s in sections]
    assert titles[:3] == ["Source/Source: Succeeded", "Build/BuildAndTest: Succeeded", "Deploy/DeployToProduction: Failed"]
    assert sections[2]["lines"] == ["line 2", "line 3", "line 4"]
    # moto lists more InstanceIds on a command than were sent to (instances of
    # other tests on this worker), so look for ours among the SSM sections.
    assert any(t.endswith(f"on {production['instance']}: Success") for t in titles[3:]), titles


# ------------------------------------------------------------------ bootstrap


def test_bootstrap_is_idempotent(env):
    bucket = f"state-{uuid.uuid4().hex[:12]}"
    first = run("bootstrap", "--region", REGION, "--bucket", bucket, "--json")
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert data["changed"] == [f"created bucket {bucket}", "enabled versioning", "blocked public access",
                               "enabled default encryption", "set TLS-only bucket policy", "created KMS key alias/devprod-pulumi"]
    assert data["login"] == f"pulumi login 's3://{bucket}?region={REGION}'"
    assert "awskms://alias/devprod-pulumi" in data["stack_init"]
    second = run("bootstrap", "--region", REGION, "--bucket", bucket)
    assert second.exit_code == 0 and "nothing changed" in second.stdout
    lines = second.stdout.splitlines()
    assert lines[-2:] == ["  pulumi stack init <stack> \\",
                          f"      --secrets-provider 'awskms://alias/devprod-pulumi?region={REGION}'"]
    assert all(len(line) <= 80 for line in lines), lines
    s3 = client("s3", env)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"] is True


def test_bootstrap_refuses_a_bad_bucket_name(env):
    result = run("bootstrap", "--region", REGION, "--bucket", "Bad_Name")
    assert result.exit_code == 2 and "not a valid S3 bucket name" in result.stderr


# ------------------------------------------------------------------ ssh


def test_ssh_print_needs_no_plugin_and_connecting_names_what_is_missing(env, tmp_path):
    result = run("ssh", "alice", "--instance-id", "i-0123456789abcdef0", "--region", REGION, "--print")
    assert result.exit_code == 0, result.output
    # devprod is not on this test's PATH: the ProxyCommand runs this interpreter's devprod.
    assert result.stdout.strip() == (
        f"ssh -o 'ProxyCommand={sys.executable} -m devprod.cli box connect alice --instance-id %h --port %p "
        "--region eu-central-1' alice@i-0123456789abcdef0"
    )
    result = run("ssh", "alice", "--instance-id", "i-0123456789abcdef0")
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "not on PATH: the AWS CLI (aws), the Session Manager plugin (session-manager-plugin)" in line
    assert "--print shows the command" in line


@pytest.mark.parametrize(
    "args, message",
    [
        (["root@attacker.example", "--instance-id", "i-0123456789abcdef0"], "NAME 'root@attacker.example' is not a developer name"),
        (["alice", "--instance-id", "i-xyz; rm"], "--instance-id 'i-xyz; rm' is not an EC2 instance id"),
        (["alice", "--instance-id", "i-0123456789abcdef0", "--region", "eu-cental-1"], "--region 'eu-cental-1' is not an AWS region"),
    ],
)
def test_ssh_refuses_what_would_reach_the_ssh_command_line(env, args, message):
    result = run("ssh", *args, "--print")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert message in line, line


def test_ssh_unknown_developer_exits_2(env):
    result = run("ssh", "nobody-here")
    assert result.exit_code == 2 and "no instance id for developer 'nobody-here'" in result.stderr


def test_wait_for_is_bounded_by_its_clock():
    ssm = _stub_invocations(["InProgress"] * 3)
    ticks = iter([0, 0, 5, 11, 20])
    states, timed_out = ops.wait_for(ssm, "c" * 36, ["i-0123456789abcdef0"], timeout=10, poll=0, clock=lambda: next(ticks), sleep=lambda s: None)
    assert timed_out and states["i-0123456789abcdef0"].status == "InProgress"


def test_aws_problem_is_raised_for_unknown_invocation_only_when_not_missing():
    ssm = offline("ssm")
    stubber = Stubber(ssm)
    stubber.add_client_error("get_command_invocation", "InvocationDoesNotExist", "not yet")
    stubber.add_client_error("get_command_invocation", "AccessDeniedException", "no")
    stubber.activate()
    assert ops.invocation(ssm, "c" * 36, "i-0123456789abcdef0").status == "Pending"
    with pytest.raises(AwsProblem, match="AccessDeniedException: no \\(the caller's IAM permissions"):
        ops.invocation(ssm, "c" * 36, "i-0123456789abcdef0")


def test_status_falls_back_to_the_deploy_log_for_the_live_release(env, pipeline, monkeypatch):
    logs = client("logs", env)
    group = f"/devprod/{uuid.uuid4().hex[:8]}/deploy"
    logs.create_log_group(logGroupName=group)
    now = int(time.time() * 1000)
    for index, (stream, lines) in enumerate([
        ("cmd-1/i-1/aws-runShellScript/stderr", ["deploy[1]: current -> releases/aaaaaaa1", "deploy[1]: success (exit 0)"]),
        ("cmd-2/i-1/aws-runShellScript/stderr", ["deploy[2]: current -> releases/bbbbbbb2", "deploy[2]: rolling back to aaaaaaa1",
                                                 "deploy[2]: current -> releases/aaaaaaa1", "deploy[2]: failed-rolled-back (exit 10)"]),
    ]):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
            {"timestamp": now + index * 1000 + i, "message": line} for i, line in enumerate(lines)])
    stubbed, _ = stub_actions(list(reversed(pipeline["ids"])))
    inject(monkeypatch, codepipeline=lambda c: Mixed(c.codepipeline, stubbed, {"list_action_executions"}))
    result = run("status", "--pipeline", pipeline["name"], "--deploy-log-group", group, "--json")
    assert result.exit_code == 0, result.output
    production = json.loads(result.stdout)["production"]
    assert production["release"] == "aaaaaaa1" and production["releaseSource"] == "deploy-log"


def test_status_watch_refreshes_until_the_newest_execution_ends(env, monkeypatch):
    snapshots = iter([
        [ops.Execution("e2", "InProgress", "bbbbbbb2", "StartPipelineExecution", None, None, None, {"Build": "InProgress"})],
        [ops.Execution("e2", "Succeeded", "bbbbbbb2", "StartPipelineExecution", None, None, 42.0, {"Build": "Succeeded"})],
    ])
    calls = []
    monkeypatch.setattr(ops, "executions", lambda *a, **k: calls.append(1) or next(snapshots))
    result = run("status", "--pipeline", "P", "--watch", "--interval", "0")
    assert result.exit_code == 0, result.output
    assert len(calls) == 2 and result.stdout.splitlines()[1].split()[:3] == ["e2", "Succeeded", "bbbbbbb2"]
    # In a pipe, progress is one stderr line per change, not a redrawn table.
    assert [line.split(" ", 1)[1] for line in result.stderr.splitlines()] == ["e2: InProgress", "e2: Succeeded"]


@pytest.mark.parametrize(
    "args, env_extra, message",
    [
        (["health", "--url", "not-a-url"], {}, "--url must be an http(s) URL"),
        (["health", "--url", "file:///etc/passwd"], {}, "--url must be an http(s) URL"),
        (["health", "--url", "http://[::1/health"], {}, "--url must be an http(s) URL"),
        (["health", "--url", "http://exa mple.com/"], {}, "--url must be an http(s) URL"),
        (["health", "--url", "http://h/", "--timeout", "0"], {}, "--timeout must be more than 0 seconds"),
        (["health", "--stack", "nostack"], {}, "pass --url, set DEVPROD_HEALTH_URL"),
        (["status", "--pipeline", "p", "--profile", "nosuchprofile"], {}, "no profile 'nosuchprofile'"),
        (["status", "--pipeline", "p"], {"AWS_DEFAULT_REGION": "", "AWS_REGION": ""}, "no AWS region"),
        (["status", "--pipeline", "p", "--region", "eu-cental-1"], {}, "--region 'eu-cental-1' is not an AWS region; did you mean eu-central-1?"),
        (["status", "--pipeline", "p"], {"AWS_REGION": "eu-cental-1"}, "AWS_REGION 'eu-cental-1' is not an AWS region; did you mean eu-central-1?"),
        (["status", "--pipeline", "p"], {"AWS_REGION": "", "AWS_DEFAULT_REGION": "eu-wset-1"}, "AWS_DEFAULT_REGION 'eu-wset-1' is not an AWS region; did you mean eu-west-1?"),
        (["logs", "--pipeline", "p"], {"AWS_REGION": "", "DEVPROD_REGION": "mars-north-1"}, "DEVPROD_REGION 'mars-north-1' is not an AWS region"),
        (["bootstrap", "--region", "eu-cental-1", "--bucket", "my-state"], {}, "--region 'eu-cental-1' is not an AWS region"),
        (["bootstrap", "--region", "eu-central-1", "--bucket", "my-state", "--key-alias", "alias/aws/s3"], {}, "--key-alias 'alias/aws/s3' is not a KMS alias name"),
        (["status", "--pipeline", "p", "--interval", "1"], {}, "--interval needs --watch"),
        (["status", "--pipeline", "p", "--interval", "1", "--max-wait", "2"], {}, "--interval and --max-wait need --watch"),
        (["deploy", "--release", "0123456", "--dry-run", "--document", "d", "--stack", "x"], {"AWS_REGION": "nowhere"}, "AWS_REGION 'nowhere' is not an AWS region"),
    ],
)
def test_bad_flags_and_environment_are_one_line_exit_2(tmp_path, monkeypatch, args, env_extra, message):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: no check may need AWS
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    for key, value in env_extra.items():
        if value:
            monkeypatch.setenv(key, value)
        else:
            monkeypatch.delenv(key, raising=False)
    result = run(*args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert message in line, line


def test_a_release_check_without_s3_permission_is_an_aws_error_not_a_missing_release():
    s3 = offline("s3")
    stubber = Stubber(s3)
    stubber.add_client_error("head_object", "403", "Forbidden", 403)  # what S3 answers a HEAD it refuses
    stubber.activate()
    with pytest.raises(AwsProblem, match=r"checking s3://b/releases/.*: AWS answered 403: Forbidden \(the caller's IAM"):
        ops.resolve_release(s3, "b", SHA)
