"""`devprod trace`, `history` and the rollback picker against moto's server on 127.0.0.1.

Real HTTP calls to moto for: CodePipeline CreatePipeline, StartPipelineExecution,
ListPipelineExecutions and GetPipelineExecution; CodeBuild CreateProject,
StartBuild, BatchGetBuilds; SSM CreateDocument, SendCommand, ListCommands;
CloudWatch Logs; EC2 RunInstances. A local HTTP server stands in for the app's
health endpoint and for GitHub's REST API.

botocore's Stubber serves only what moto 5.2 lacks, named in each test:
- ListActionExecutions (moto's server answers HTTP 500);
- ListCommandInvocations (not implemented in moto);
- ListPipelineExecutions and GetPipelineExecution where an execution must be
  Failed (moto marks every execution Succeeded the moment it starts).
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import ANY, Stubber

from devprod import trace
from devprod.aws import Clients
from devprod.errors import BadInput

UTC = timezone.utc
from tests.aws_clients import REGION, Mixed, client, offline  # noqa: E402
SHA_A = "a" * 40
SHA_B = "b" * 40
SHA_C = "c0ffee" + "1" * 34


# ------------------------------------------------------------------ helpers


@pytest.fixture
def env(aws_env, monkeypatch):
    for key in [k for k in os.environ if k.startswith(("AWS_", "DEVPROD_", "GITHUB_"))]:
        monkeypatch.delenv(key)
    for key, value in aws_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_REGION", REGION)
    return aws_env


def clients_for(env, **override) -> Clients:
    clients = Clients(region=REGION, endpoint_url=env["AWS_ENDPOINT_URL"])
    for name, value in override.items():
        clients.use(name, value)
    return clients


@pytest.fixture
def world(env):
    """A pipeline, a CodeBuild project with one build, two production hosts, the deploy document."""
    iam, cp, cb = client("iam", env), client("codepipeline", env), client("codebuild", env)
    ec2, ssm, logs = client("ec2", env), client("ssm", env), client("logs", env)
    tag = uuid.uuid4().hex[:8]
    role = iam.create_role(RoleName=f"r{tag}", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "codepipeline.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    name = f"P{tag}"
    act = lambda n, category, provider, conf, **io: {  # noqa: E731
        "name": n, "actionTypeId": {"category": category, "owner": "AWS", "provider": provider, "version": "1"},
        "configuration": conf, **io}
    cp.create_pipeline(pipeline={
        "name": name, "roleArn": role, "artifactStore": {"type": "S3", "location": "bucket"},
        "pipelineType": "V2", "executionMode": "QUEUED", "variables": [{"name": "COMMIT_SHA", "defaultValue": "0000000"}],
        "stages": [
            {"name": "Source", "actions": [act("Source", "Source", "S3", {"S3Bucket": "b", "S3ObjectKey": "source/app.zip"}, outputArtifacts=[{"name": "source"}])]},
            {"name": "Test", "actions": [act("TestAndPackage", "Build", "CodeBuild", {"ProjectName": f"build-{tag}"}, inputArtifacts=[{"name": "source"}])]},
            {"name": "Release", "actions": [act("PublishAndDeploy", "Invoke", "Lambda", {"FunctionName": "release"}, inputArtifacts=[{"name": "source"}])]},
        ]})
    cb.create_project(name=f"build-{tag}", source={"type": "S3", "location": "bucket/source/app.zip"},
                      artifacts={"type": "NO_ARTIFACTS"},
                      environment={"type": "LINUX_CONTAINER", "image": "aws/codebuild/standard:7.0",
                                   "computeType": "BUILD_GENERAL1_SMALL"}, serviceRole=role)
    build_id = cb.start_build(projectName=f"build-{tag}")["build"]["id"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    hosts = [i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2)["Instances"]]
    document = f"deploy-{tag}"
    ssm.create_document(Content=json.dumps({"schemaVersion": "2.2", "description": "d", "parameters": {
        "release": {"type": "String"}, "action": {"type": "String"}, "checksum": {"type": "String"}},
        "mainSteps": [{"action": "aws:runShellScript", "name": "deploy", "inputs": {"runCommand": ["true"]}}]}),
        Name=document, DocumentType="Command", DocumentFormat="JSON")
    group = f"/devprod/{tag}/deploy"
    logs.create_log_group(logGroupName=group)
    return {"name": name, "cp": cp, "build": build_id, "hosts": hosts, "document": document, "ssm": ssm,
            "logs": logs, "group": group, "tag": tag, "env": env}


def start(world, commit):
    execution = world["cp"].start_pipeline_execution(name=world["name"], variables=[{"name": "COMMIT_SHA", "value": commit}])
    time.sleep(0.02)
    return execution["pipelineExecutionId"]


def send(world, commit, action="deploy"):
    return world["ssm"].send_command(DocumentName=world["document"], InstanceIds=world["hosts"],
                                     Parameters={"release": [commit], "action": [action], "checksum": [""]})["Command"]["CommandId"]


def host_log(world, command, instance, lines, at_ms):
    stream = f"{command}/{instance}/aws-runShellScript/stderr"
    world["logs"].create_log_stream(logGroupName=world["group"], logStreamName=stream)
    world["logs"].put_log_events(logGroupName=world["group"], logStreamName=stream, logEvents=[
        {"timestamp": at_ms + i, "message": line} for i, line in enumerate(lines)])


def stub_actions(execution_id, build_id, statuses=("Succeeded", "Succeeded", "Succeeded"), command=None,
                 t0=None, summary=None):
    """Stubbed ListActionExecutions (moto's server answers it with HTTP 500)."""
    stubbed = offline("codepipeline")
    stubber = Stubber(stubbed)
    t0 = t0 or datetime.now(UTC)
    release_output = {"executionResult": {"externalExecutionId": "job-1",
                                          "externalExecutionSummary": summary or "deployed"}}
    if command:
        release_output["outputVariables"] = {"COMMAND_ID": command, "RELEASE_SHA256": "ab" * 32}
    details = [
        {"pipelineExecutionId": execution_id, "stageName": "Source", "actionName": "Source", "status": statuses[0],
         "startTime": t0, "lastUpdateTime": t0 + timedelta(seconds=3),
         "input": {"actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"}},
         "output": {"executionResult": {"externalExecutionSummary": "source/app.zip"}}},
        {"pipelineExecutionId": execution_id, "stageName": "Test", "actionName": "TestAndPackage", "status": statuses[1],
         "startTime": t0 + timedelta(seconds=4), "lastUpdateTime": t0 + timedelta(seconds=184),
         "input": {"actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"}},
         "output": {"executionResult": {"externalExecutionId": build_id}}},
        {"pipelineExecutionId": execution_id, "stageName": "Release", "actionName": "PublishAndDeploy", "status": statuses[2],
         "startTime": t0 + timedelta(seconds=185), "lastUpdateTime": t0 + timedelta(seconds=300),
         "input": {"actionTypeId": {"category": "Invoke", "owner": "AWS", "provider": "Lambda", "version": "1"}},
         "output": release_output},
    ]
    stubber.add_response("list_action_executions", {"actionExecutionDetails": details},
                         {"pipelineName": ANY, "filter": {"pipelineExecutionId": execution_id}})
    stubber.activate()
    return stubbed, stubber


def stub_invocations(command, results, t0):
    """Stubbed ListCommandInvocations (moto does not implement it)."""
    stubbed = offline("ssm")
    stubber = Stubber(stubbed)
    stubber.add_response("list_command_invocations", {"CommandInvocations": [
        {"CommandId": command, "InstanceId": instance, "Status": status, "RequestedDateTime": t0,
         "CommandPlugins": [{"Name": "deploy", "Status": status, "ResponseStartDateTime": t0 + timedelta(seconds=1),
                             "ResponseFinishDateTime": t0 + timedelta(seconds=seconds), "Output": output}]}
        for instance, status, seconds, output in results]}, {"CommandId": command, "Details": True})
    stubber.activate()
    return stubbed, stubber


class Fake(http.server.BaseHTTPRequestHandler):
    """The app's /health and GitHub's REST API, as far as trace reads them."""

    routes: dict = {}
    seen: list = []

    def do_GET(self):  # noqa: N802
        self.seen.append((self.path, self.headers.get("Authorization")))
        path = self.path.split("?")[0]
        status, body = self.routes.get(path, (404, {"message": "Not Found"}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake():
    handler = type("F", (Fake,), {"routes": {}, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# ------------------------------------------------------------------ trace: live


@pytest.mark.slow
def test_trace_of_a_live_commit_from_github_to_the_hosts(world, fake, monkeypatch):
    handler, base = fake
    start(world, SHA_A)
    execution = start(world, SHA_B)
    summary = next(s for s in world["cp"].list_pipeline_executions(pipelineName=world["name"])["pipelineExecutionSummaries"]
                   if s["pipelineExecutionId"] == execution)
    live_at = summary["lastUpdateTime"]
    committed = (live_at - timedelta(minutes=7)).replace(microsecond=0)
    command = send(world, SHA_B)
    now_ms = int(time.time() * 1000)
    for host in world["hosts"]:
        host_log(world, "old-cmd", host, [f"x deploy[1]: current -> releases/{SHA_A}"], now_ms - 60000)
        host_log(world, command, host, [f"x deploy[2]: current -> releases/{SHA_B}",
                                        f"x deploy[2]: success (exit 0); serving: {SHA_B} in slot green"], now_ms)
    handler.routes.update({
        "/health": (200, {"status": "ok", "release": SHA_B}),
        f"/repos/example-org/app/commits/{SHA_B}": (200, {"sha": SHA_B, "commit": {"committer": {
            "date": committed.strftime("%Y-%m-%dT%H:%M:%SZ")}}}),
        "/repos/example-org/app/actions/runs": (200, {"workflow_runs": [{
            "name": "deploy", "status": "completed", "conclusion": "success", "html_url": "https://github.example/run/1",
            "run_started_at": (committed + timedelta(seconds=20)).isoformat(),
            "updated_at": (committed + timedelta(seconds=80)).isoformat()}]}),
    })
    monkeypatch.setenv("GITHUB_API_URL", base)
    actions, action_stubs = stub_actions(execution, world["build"], command=command)
    invocations, invocation_stubs = stub_invocations(command, [(h, "Success", 70, "deploy.sh: success") for h in world["hosts"]],
                                                     datetime.now(UTC))
    clients = clients_for(world["env"],
                          codepipeline=Mixed(world["cp"], actions, {"list_action_executions"}),
                          ssm=Mixed(world["ssm"], invocations, {"list_command_invocations"}))
    t = trace.gather(clients, world["name"], SHA_B[:7], document=world["document"], log_group=world["group"],
                     health_url=f"{base}/health", repository="example-org/app", github_token="t0ken")
    action_stubs.assert_no_pending_responses()
    invocation_stubs.assert_no_pending_responses()
    assert t.execution.id == execution and t.commit == SHA_B
    assert [(s.name, s.status) for s in t.stages] == [("Source", "Succeeded"), ("Test", "Succeeded"), ("Release", "Succeeded")]
    assert [s.seconds for s in t.stages] == [3.0, 180.0, 115.0]
    assert [(b.id, b.status) for b in t.builds] == [(world["build"], "SUCCEEDED")]  # BatchGetBuilds from moto
    assert t.command.id == command and t.command.action == "deploy" and t.command.release == SHA_B
    assert [(h.instance_id, h.status, h.seconds) for h in t.command.hosts] == [(h, "Success", 69.0) for h in world["hosts"]]
    assert t.serving == {h: SHA_B for h in world["hosts"]}
    assert t.health.healthy and t.health.release == SHA_B
    assert t.github.conclusion == "success" and t.github.commit_time == committed
    assert ("/repos/example-org/app/actions/runs?head_sha=" + SHA_B + "&per_page=10", "Bearer t0ken") in handler.seen
    assert t.verdict.live and t.verdict.lead_time_from == "commit"
    assert t.verdict.line == f"LIVE {SHA_B[:7]}; lead time 7m00s (commit->live)"
    lines = trace.render_trace(t)
    assert all(len(line) <= 80 for line in lines), [l for l in lines if len(l) > 80]
    text = "\n".join(lines)
    assert "github   deploy: success," in text and f"  {world['hosts'][0]:<20} serves {SHA_B[:12]}" in text
    assert lines[-1] == t.verdict.line
    data = json.loads(json.dumps(t.to_json()))
    assert data["verdict"]["live"] is True and data["stages"][1]["seconds"] == 180.0
    assert data["command"]["hosts"][0]["seconds"] == 69.0


# ------------------------------------------------------------------ trace: failed at the deploy stage


@pytest.mark.slow
def test_trace_of_a_deploy_that_stopped_at_release_with_one_host_failed(world, fake):
    handler, base = fake
    execution = "33333333-3333-3333-3333-333333333333"
    t0 = datetime.now(UTC).replace(microsecond=0)
    # Stubbed: ListPipelineExecutions and GetPipelineExecution (moto marks every execution Succeeded at once),
    # and ListActionExecutions (moto's server answers HTTP 500).
    pipeline = offline("codepipeline")
    stubber = Stubber(pipeline)
    stubber.add_response("list_pipeline_executions", {"pipelineExecutionSummaries": [
        {"pipelineExecutionId": execution, "status": "Failed", "startTime": t0,
         "lastUpdateTime": t0 + timedelta(seconds=300), "trigger": {"triggerType": "StartPipelineExecution"}}]},
        {"pipelineName": world["name"], "maxResults": 50})
    stubber.add_response("get_pipeline_execution", {"pipelineExecution": {
        "pipelineExecutionId": execution, "status": "Failed",
        "variables": [{"name": "COMMIT_SHA", "resolvedValue": SHA_C}]}})
    stubber.activate()
    actions, _ = stub_actions(execution, world["build"], statuses=("Succeeded", "Succeeded", "Failed"), t0=t0,
                              summary="deploy of c0ffee1 failed: i-x: Failed")
    command = send(world, SHA_C)  # found through ListCommands (moto) by document and release
    good, bad = world["hosts"]
    # Stubbed: ListCommandInvocations (not in moto).
    invocations, _ = stub_invocations(command, [
        (good, "Success", 61, "deploy.sh: success"),
        (bad, "Failed", 41, "deploy[9]: green not healthy within 60s\ndeploy[9]: failed (exit 10); serving: " + SHA_A),
    ], t0 + timedelta(seconds=190))
    now_ms = int(time.time() * 1000)
    host_log(world, command, good, [f"x deploy[2]: current -> releases/{SHA_C}"], now_ms)
    host_log(world, command, bad, [f"x deploy[9]: failed (exit 10); serving: {SHA_A}"], now_ms)
    handler.routes["/health"] = (200, {"status": "ok", "release": SHA_A})
    clients = clients_for(world["env"],
                          codepipeline=Mixed(pipeline, actions, {"list_action_executions"}),
                          ssm=Mixed(world["ssm"], invocations, {"list_command_invocations"}))
    t = trace.gather(clients, world["name"], SHA_C, document=world["document"], log_group=world["group"],
                     health_url=f"{base}/health", repository="example-org/app")
    assert t.execution.status == "Failed" and t.stages[-1].status == "Failed"
    assert t.command.id == command
    assert {h.instance_id: h.status for h in t.command.hosts} == {good: "Success", bad: "Failed"}
    assert t.serving == {good: SHA_C, bad: SHA_A}
    assert not t.verdict.live and t.verdict.stopped_at == "Release/PublishAndDeploy"
    assert t.verdict.line == "NOT LIVE c0ffee1: failed at Release/PublishAndDeploy, 1 of 2 hosts failed"
    lines = trace.render_trace(t)
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    assert "github   skipped: GITHUB_TOKEN is not set" in text
    assert f"  {bad:<22} Failed" in text and f"    deploy[9]: failed (exit 10); serving: {SHA_A}"[:79] in text
    assert "      deploy of c0ffee1 failed: i-x: Failed" in text
    assert lines[-1] == t.verdict.line


# ------------------------------------------------------------------ trace: never deployed


@pytest.mark.slow
def test_trace_of_a_commit_never_deployed(world):
    start(world, SHA_A)
    start(world, SHA_B)
    clients = clients_for(world["env"])
    t = trace.gather(clients, world["name"], "deadbee", document=world["document"], log_group=world["group"])
    assert t.execution is None and t.stages == [] and t.command is None
    assert t.verdict.line == "NOT LIVE deadbee: never deployed (no pipeline execution among the last 50)"
    lines = trace.render_trace(t)
    assert "pipeline no execution for this commit" in lines and lines[-1] == t.verdict.line
    assert "github   skipped: GITHUB_TOKEN is not set" in lines


@pytest.mark.slow
def test_latest_follows_the_newest_execution(world):
    start(world, SHA_A)
    newest = start(world, SHA_B)
    actions, _ = stub_actions(newest, world["build"])  # Stubbed: ListActionExecutions (moto: HTTP 500)
    clients = clients_for(world["env"],
                          codepipeline=Mixed(world["cp"], actions, {"list_action_executions"}))
    t = trace.gather(clients, world["name"], "latest")
    assert t.execution.id == newest and t.commit == SHA_B
    assert t.verdict.live and t.verdict.lead_time_from == "pipeline start"
    assert "releases per host unknown: the deploy log group is unknown" in t.notes
    assert "deploy command not looked up: the deploy document is unknown (--document)" in t.notes


@pytest.mark.parametrize("sha", ["main", "abc", "g" * 7, "a" * 41])
def test_trace_refuses_what_is_not_a_sha(sha):
    with pytest.raises(BadInput, match="is not a git sha"):
        trace.gather(object(), "P", sha)


def test_a_replaced_release_is_not_live_now():
    now = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
    t = trace.Trace(SHA_A, SHA_A, "P", trace.ExecutionInfo("e", "Succeeded", SHA_A, "Webhook", now - timedelta(minutes=5), now),
                    [], [], None, {"i-0123456789abcdef0": SHA_B}, None, trace.GitHubRun(False, "skipped"), [])
    v = trace.verdict(t, now)
    assert not v.live and v.line == "NOT LIVE NOW aaaaaaa: replaced by bbbbbbb; lead time 5m00s (pipeline->live)"


def test_a_running_execution_says_where_it_is():
    now = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
    step = trace.Step("Test", "TestAndPackage", "InProgress", "CodeBuild", now - timedelta(minutes=2), None)
    t = trace.Trace("latest", SHA_A, "P", trace.ExecutionInfo("e", "InProgress", SHA_A, None, now - timedelta(minutes=3), None),
                    trace.stages_of([step]), [], None, {}, None, trace.GitHubRun(False, "skipped"), [])
    assert trace.verdict(t, now).line == "IN PROGRESS aaaaaaa: at Test/TestAndPackage, 3m00s so far"
    assert t.running


def test_github_errors_are_one_line(fake, monkeypatch):
    handler, base = fake
    handler.routes[f"/repos/o/r/commits/{SHA_A}"] = (401, {"message": "Bad credentials"})
    assert trace.github_run("o/r", SHA_A, "bad", api=base).note == "GitHub answered HTTP 401 for o/r@aaaaaaa"
    assert trace.github_run(None, SHA_A, "t").note.startswith("skipped: the app repository is unknown")
    assert trace.github_run("o/r", SHA_A, None).note == "skipped: GITHUB_TOKEN is not set"
    assert not any(auth is None for _, auth in handler.seen)


# ------------------------------------------------------------------ history


@pytest.mark.slow
def test_history_lists_executions_and_marks_a_rollback(world):
    ids = [start(world, sha) for sha in (SHA_A, SHA_B, SHA_C)]
    time.sleep(0.05)
    rollback = send(world, "", action="rollback")  # moto reports every command Success
    assert rollback
    clients = clients_for(world["env"])
    h = trace.history(clients, world["name"], count=2, days=7, document=world["document"])
    assert [r.id for r in h.runs[: h.shown]] == ids[::-1][:2]
    newest = h.runs[0]
    assert newest.commit == SHA_C and newest.rolled_back_at is not None
    assert all(r.rolled_back_at is None for r in h.runs[1:])
    m = h.metrics
    assert (m.deploys, m.live_deploys, m.failures) == (3, 3, 1)
    assert m.change_failure_rate == pytest.approx(1 / 3) and m.deploys_per_week == 3.0
    lines = trace.render_history(h)
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].split() == ["started", "commit", "result", "took", "trigger", "note"]
    assert " c0ffee1 Succeeded       0s  start API rolled back " in lines[2] and not lines[2].endswith("…")
    data = json.loads(json.dumps(h.to_json()))
    assert len(data["executions"]) == 2 and data["metrics"]["changeFailureRate"] == pytest.approx(1 / 3)
    assert set(data["metrics"]["how"]) == {"deploys per week", "median lead time", "change-failure rate",
                                           "median time to restore"}


def test_history_pages_until_the_window_and_reads_failed_stages():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    # Stubbed, all of it: two pages of ListPipelineExecutions with a Failed execution (moto has none), its
    # GetPipelineExecution, and ListActionExecutions (moto: HTTP 500).
    cp = offline("codepipeline")
    stubber = Stubber(cp)

    def summary(i, status, hours_ago):
        return {"pipelineExecutionId": f"{i:08d}-0000-0000-0000-000000000000", "status": status,
                "startTime": now - timedelta(hours=hours_ago), "lastUpdateTime": now - timedelta(hours=hours_ago) + timedelta(minutes=5),
                "trigger": {"triggerType": "Webhook"}}

    stubber.add_response("list_pipeline_executions", {"pipelineExecutionSummaries": [summary(1, "Succeeded", 1), summary(2, "Failed", 30)],
                                                      "nextToken": "page2"})
    for i, commit in ((1, SHA_A), (2, SHA_B)):
        if i == 2:
            stubber.add_response("list_action_executions", {"actionExecutionDetails": [
                {"stageName": "Test", "actionName": "TestAndPackage", "status": "Failed", "startTime": now}]})
        stubber.add_response("get_pipeline_execution", {"pipelineExecution": {"variables": [{"name": "COMMIT_SHA", "resolvedValue": commit}]}})
    stubber.add_response("list_pipeline_executions", {"pipelineExecutionSummaries": [summary(3, "Succeeded", 24 * 9)]})
    stubber.activate()
    clients = Clients(region=REGION).use("codepipeline", cp)
    h = trace.history(clients, "P", count=1, days=7, now=now)
    stubber.assert_no_pending_responses()
    assert [r.commit for r in h.runs] == [SHA_A, SHA_B] and h.shown == 1  # stopped at the run older than the window
    assert h.runs[1].failed_stage == "Test"
    assert h.metrics.deploys == 1 and h.metrics.change_failure_rate == 0.0  # failing tests are no failed deploy
    assert h.metrics.median_lead_time == timedelta(minutes=5) and h.metrics.lead_time_basis == "pipeline"


def test_history_refuses_a_zero_count():
    with pytest.raises(BadInput):
        trace.history(object(), "P", count=0)


# ------------------------------------------------------------------ rollback picker


def switch(hours_ago, release, instance="i-0123456789abcdef0", now=datetime(2026, 11, 28, 12, 0, tzinfo=UTC)):
    return trace.Switch(now - timedelta(hours=hours_ago), instance, release, "cmd")


def test_release_choices_newest_first_with_the_previous_preselected():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    found = [switch(50, "1111111"), switch(30, "2222222"), switch(20, "3333333"), switch(10, "2222222"),
             switch(2, "4444444"), switch(1, "5555555", instance="i-0fedcba987654321f")]
    choices = trace.release_choices(found, now, instance_id="i-0123456789abcdef0",
                                    subjects={"3333333": "Fix the login page"})
    assert [(c.release, c.current, c.preselected) for c in choices] == [
        ("4444444", True, False), ("2222222", False, True), ("3333333", False, False), ("1111111", False, False)]
    assert choices[1].live_for == timedelta(hours=8) and choices[0].live_for is None
    assert choices[2].subject == "Fix the login page" and choices[2].live_for == timedelta(hours=10)
    kept = trace.release_choices(found, now, instance_id="i-0123456789abcdef0", keep=2)
    assert [c.release for c in kept] == ["4444444", "2222222"]
    # no instance named: the host with the newest switch
    assert [c.release for c in trace.release_choices(found, now)] == ["5555555"]
    assert trace.release_choices([], now) == []


def test_render_choices_fits_and_marks_preselected_and_live():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    choices = trace.release_choices([switch(30, "2222222"), switch(2, "4444444")], now,
                                    subjects={"2222222": "A very long commit subject " * 5})
    lines = trace.render_choices(choices, now)
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].startswith("*  1  4444444  2026-11-28 10:00       now")
    assert lines[2].startswith(">  2  2222222  2026-11-27 06:00     1d04h  A very long") and lines[2].endswith("…")
    assert trace.render_choices([], now) == ["no releases recorded in the deploy log"]


@pytest.mark.slow
def test_switches_read_each_host_from_the_deploy_log(world):
    now_ms = int(time.time() * 1000)
    one, two = world["hosts"]
    host_log(world, "c1", one, [f"t deploy[1]: current -> releases/{SHA_A}", f"t deploy[1]: success (exit 0); serving: {SHA_A}"], now_ms - 5000)
    host_log(world, "c2", one, [f"t deploy[2]: current -> releases/{SHA_B}", f"t deploy[2]: failed-rolled-back (exit 10); serving: {SHA_A}"], now_ms - 3000)
    host_log(world, "c3", two, [f"t deploy[3]: current -> releases/{SHA_C}"], now_ms - 1000)
    host_log(world, "not-a-command-stream", "x", ["current -> releases/deadbee"], now_ms)
    found = trace.switches(world["logs"], world["group"])
    assert [(s.instance_id, s.release, s.command_id) for s in found] == [(one, SHA_A, "c1"), (one, SHA_A, "c2"), (two, SHA_C, "c3")]
    assert trace.serving_now(found) == {one: SHA_A, two: SHA_C}


# ------------------------------------------------------------------ the commands (registered on a fresh app)

import typer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from devprod import delivery_cli  # noqa: E402


def app_with_commands() -> typer.Typer:
    app = typer.Typer(add_completion=False, rich_markup_mode=None)
    delivery_cli.register(app)
    return app


def invoke(*args):
    return CliRunner().invoke(app_with_commands(), list(args))


@pytest.mark.slow
def test_cli_trace_of_a_commit_never_deployed_exits_1_with_the_verdict_last(world):
    start(world, SHA_A)
    args = ["deadbee", "--pipeline", world["name"], "--document", world["document"], "--deploy-log-group", world["group"]]
    result = invoke("trace", *args)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == "NOT LIVE deadbee: never deployed (no pipeline execution among the last 50)"
    assert all(len(line) <= 80 for line in lines)
    result = invoke("trace", *args, "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["execution"] is None and data["verdict"]["stopped_at"] == "never deployed"
    assert data["github"] == {"checked": False, "note": "skipped: GITHUB_TOKEN is not set", "name": None, "status": None,
                              "conclusion": None, "url": None, "started": None, "ended": None, "commit_time": None}


@pytest.mark.slow
def test_cli_trace_of_a_live_commit_exits_0(world, monkeypatch):
    execution = start(world, SHA_B)
    actions, _ = stub_actions(execution, world["build"])  # Stubbed: ListActionExecutions (moto: HTTP 500)
    original = delivery_cli.build_clients

    def with_stubs(*args):
        return original(*args).use("codepipeline", Mixed(world["cp"], actions, {"list_action_executions"}))

    monkeypatch.setattr(delivery_cli, "build_clients", with_stubs)
    result = invoke("trace", SHA_B[:8], "--pipeline", world["name"], "--endpoint-url", world["env"]["AWS_ENDPOINT_URL"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith(f"LIVE {SHA_B[:7]}; lead time ")
    assert "(pipeline->live)" in result.stdout.splitlines()[-1]


@pytest.mark.slow
def test_cli_errors_are_one_line_with_their_exit_code(world):
    result = invoke("trace", "main")  # checked before any name is needed
    assert result.exit_code == 2 and result.stderr.strip() == "error: 'main' is not a git sha (7-40 hex characters) or 'latest'"
    result = invoke("trace", "--pipeline", "NoSuchPipeline")
    assert result.exit_code == 3
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: listing executions of pipeline NoSuchPipeline: AWS answered PipelineNotFoundException")
    result = invoke("history")
    assert result.exit_code == 2 and "pass --pipeline, set DEVPROD_PIPELINE" in result.stderr


@pytest.mark.slow
def test_cli_history_table_and_json(world):
    for sha in (SHA_A, SHA_B):
        start(world, sha)
    result = invoke("history", "--pipeline", world["name"], "--document", world["document"], "--count", "5", "--days", "7")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[0] == f"last 2 executions of {world['name']} (newest first, UTC)"
    assert " bbbbbbb Succeeded " in lines[2] and " aaaaaaa Succeeded " in lines[3]
    assert "  deploys per week        2.0  (2 live in 7 days)" in lines
    data = json.loads(invoke("history", "--pipeline", world["name"], "--json").stdout)
    assert [e["commit"] for e in data["executions"]] == [SHA_B, SHA_A]
    assert data["metrics"]["liveDeploys"] == 2 and data["metrics"]["leadTimeBasis"] == "pipeline"


def _running_then(final_status, monkeypatch, count=2):
    now = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)

    def make(status):
        step = trace.Step("Test", "TestAndPackage", "InProgress" if status == "InProgress" else "Succeeded", "CodeBuild",
                          now - timedelta(minutes=2), None if status == "InProgress" else now)
        t = trace.Trace("latest", SHA_A, "P", trace.ExecutionInfo("e", status, SHA_A, None, now - timedelta(minutes=3),
                                                                  None if status == "InProgress" else now),
                        trace.stages_of([step]), [], None, {}, None, trace.GitHubRun(False, "skipped"), [])
        t.verdict = trace.verdict(t, now)
        return t

    snapshots = iter([make("InProgress")] * (count - 1) + [make(final_status)])
    calls = []
    monkeypatch.setattr(trace, "gather", lambda *a, **k: calls.append(1) or next(snapshots))
    monkeypatch.setattr(delivery_cli, "build_clients", lambda *a: object())
    return calls


def test_cli_trace_watch_follows_until_the_execution_ends(monkeypatch):
    calls = _running_then("Succeeded", monkeypatch)
    result = invoke("trace", "--watch", "--interval", "0", "--pipeline", "P")
    assert result.exit_code == 0, result.output
    assert len(calls) == 2
    lines = result.stdout.splitlines()
    assert lines[0].endswith(" IN PROGRESS aaaaaaa: at Test/TestAndPackage, 3m00s so far")
    assert lines[-1] == "LIVE aaaaaaa; lead time 3m00s (pipeline->live)"


def test_cli_trace_watch_gives_up_after_max_wait(monkeypatch):
    _running_then("InProgress", monkeypatch, count=50)
    result = invoke("trace", "--watch", "--interval", "0.01", "--max-wait", "0.05", "--pipeline", "P")
    assert result.exit_code == 4, result.output
    assert result.stderr.strip() == "error: execution e still InProgress after 0s"


def test_cli_help_documents_exit_codes_and_how_metrics_are_computed():
    text = invoke("trace", "--help").stdout
    assert "Exit codes:" in text and "4  --watch gave up" in text and "GITHUB_TOKEN" in text
    text = invoke("history", "--help").stdout
    assert "change-failure rate     failed or rolled-back deploys / deploys" in text


def test_pick_release_defaults_to_the_preselected_previous_release(capsys):
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    choices = trace.release_choices([switch(30, "2222222"), switch(20, "3333333"), switch(2, "4444444")], now)
    asked = []

    def ask(prompt, default=None):
        asked.append((prompt, default))
        return default

    assert delivery_cli.pick_release(choices, now, ask=ask) == "3333333"
    assert asked == [("Roll back to #", "2")]
    shown = capsys.readouterr().out.splitlines()
    assert shown[2].startswith(">  2  3333333")
    assert delivery_cli.pick_release(choices, now, ask=lambda *a, **k: "3") == "2222222"
    with pytest.raises(BadInput, match="already live"):
        delivery_cli.pick_release(choices, now, ask=lambda *a, **k: "1")
    with pytest.raises(BadInput, match="not a number from the list"):
        delivery_cli.pick_release(choices, now, ask=lambda *a, **k: "9")
    assert delivery_cli.pick_release(choices[:1], now, ask=lambda *a, **k: pytest.fail("asked")) is None


def _bare(execution=None, github=None, health=None, serving=None):
    return trace.Trace(SHA_A[:7], SHA_A if execution else SHA_A[:7], "P", execution, [], [], None, serving or {}, health,
                       github or trace.GitHubRun(False, "skipped"), [])


def test_a_commit_stopped_in_github_actions_says_so():
    now = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
    failed = trace.GitHubRun(True, "ok", "deploy", "completed", "failure")
    assert trace.verdict(_bare(github=failed), now).line == "NOT LIVE aaaaaaa: stopped in GitHub Actions (deploy: failure)"
    running = trace.GitHubRun(True, "ok", "deploy", "in_progress", None)
    assert trace.verdict(_bare(github=running), now).line == "NOT LIVE aaaaaaa: GitHub Actions still in progress (deploy)"
    served = _bare(serving={"i-0123456789abcdef0": SHA_A})
    assert trace.verdict(served, now).line == "LIVE aaaaaaa, but not through the pipeline (no pipeline execution among the last 50)"


def test_live_but_unhealthy_is_said_and_exits_1(monkeypatch):
    from devprod.ops import Health

    now = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
    execution = trace.ExecutionInfo("e", "Succeeded", SHA_A, None, now - timedelta(minutes=4), now)
    sick = Health("http://h/health", False, 500, 3.0, None, 1, "HTTP 500")
    t = _bare(execution=execution, health=sick, serving={"i-0123456789abcdef0": SHA_A})
    t.verdict = trace.verdict(t, now)
    assert t.verdict.live and t.verdict.line == "LIVE aaaaaaa but UNHEALTHY now; lead time 4m00s (pipeline->live)"
    assert "  health  UNHEALTHY: HTTP 500" in trace.render_trace(t)
    monkeypatch.setattr(trace, "gather", lambda *a, **k: t)
    monkeypatch.setattr(delivery_cli, "build_clients", lambda *a: object())
    result = invoke("trace", "--pipeline", "P")
    assert result.exit_code == 1 and result.stdout.splitlines()[-1] == t.verdict.line


@pytest.mark.slow
def test_rollback_choices_from_the_deploy_log_with_subjects_from_github(world, fake):
    handler, base = fake
    one, _ = world["hosts"]
    now_ms = int(time.time() * 1000)
    host_log(world, "c1", one, [f"t deploy[1]: success (exit 0); serving: {SHA_A}"], now_ms - 7_200_000)
    host_log(world, "c2", one, [f"t deploy[2]: success (exit 0); serving: {SHA_B}"], now_ms - 3_600_000)
    handler.routes[f"/repos/o/app/commits/{SHA_A}"] = (200, {"commit": {"message": "Fix the login redirect\n\nlong body"}})
    clients = clients_for(world["env"])
    os.environ["GITHUB_API_URL"] = base
    try:
        choices = trace.rollback_choices(clients, world["group"], repository="o/app", github_token="t")
    finally:
        del os.environ["GITHUB_API_URL"]
    assert [(c.release, c.current, c.preselected, c.subject) for c in choices] == [
        (SHA_B, True, False, None), (SHA_A, False, True, "Fix the login redirect")]
    assert abs(choices[1].live_for.total_seconds() - 3600) < 1
    assert trace.github_subjects("o/app", [SHA_A], None) == {}


def test_every_verdict_fits_80_columns_in_its_longest_form():
    from devprod.ops import Health

    now = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
    long_ago = now - timedelta(days=40)
    done = trace.ExecutionInfo("e", "Succeeded", SHA_A, None, long_ago, now)
    command = trace.Command("c", "Failed", now, "deploy", SHA_A,
                            [trace.HostResult(f"i-{n:017x}", "Failed", now, now) for n in range(12)])
    failed = trace.ExecutionInfo("e", "Failed", SHA_A, None, long_ago, now)
    steps = [trace.Step("ReleaseToProductionStage", "PublishAndDeployEverywhere", "Failed", "Lambda", long_ago, now)]
    cases = [
        _bare(execution=done, serving={f"i-{n:017x}": f"{n:07x}" for n in range(9)}),
        _bare(execution=done, health=Health("http://h/", False, None, None, None, 1, "timed out")),
        trace.Trace(SHA_A, SHA_A, "P", failed, trace.stages_of(steps), [], command, {}, None,
                    trace.GitHubRun(False, "skipped"), []),
        _bare(github=trace.GitHubRun(True, "ok", "a workflow with a rather long name indeed", "completed", "startup_failure")),
    ]
    for case in cases:
        line = trace.verdict(case, now, scan=1000).line
        assert len(line) <= 80, line
