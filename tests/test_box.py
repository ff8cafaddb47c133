"""`devprod box status|start|stop|connect` through typer's runner against moto's server.

moto 5.2 changes EC2 states at once: StartInstances leaves the box running and
StopInstances stopped by the next DescribeInstances, so the waits here pass on
their first poll. That hides EC2's real 30-90 s of `pending` and the minutes of
`stopping`: the waiting loops themselves are proven with a stopping box whose
waiter is bounded, and with the SSM agent answering something other than
Online. moto has no SSM DescribeInstanceInformation at all: that one call is
served by botocore's Stubber in every test that reaches it (named there).
moto enforces no IAM either, so the refused start (S29: someone else's box) is
a Stubber answer for StartInstances alone.
"""

from __future__ import annotations

import json
import uuid

import pytest
from botocore.stub import Stubber

from devprod import box
from devprod.errors import BadInput
from tests.test_cli_ops import REGION, Mixed, client, env, inject, offline, run  # noqa: F401 - env is a fixture

pytestmark = pytest.mark.slow


def _ping(*statuses):
    """A stubbed SSM client answering DescribeInstanceInformation (moto lacks it) with these PingStatus values."""
    ssm = offline("ssm")
    stubber = Stubber(ssm)
    for status in statuses:
        found = [] if status is None else [{"InstanceId": "i-0123456789abcdef0", "PingStatus": status}]
        stubber.add_response("describe_instance_information", {"InstanceInformationList": found})
    stubber.activate()
    return ssm


@pytest.fixture
def boxes(env):
    """Two boxes in moto, alice's stopped and bob's running, tagged as the program tags them."""
    ec2 = client("ec2", env)
    stack = f"s{uuid.uuid4().hex[:8]}"
    ids = {}
    for name in ("alice", "bob"):
        tags = {"devprod:developer": name, "devprod:role": "developer", "devprod:stack": stack, "Name": f"{name}-box"}
        made = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.large",
                                 TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                     {"Key": k, "Value": v} for k, v in tags.items()]}])
        ids[name] = made["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[ids["alice"]])
    return {"ec2": ec2, "stack": stack, **ids}


def state(boxes, name):
    return boxes["ec2"].describe_instances(InstanceIds=[boxes[name]])["Reservations"][0]["Instances"][0]["State"]["Name"]


def test_connect_starts_a_stopped_box_waits_for_the_agent_then_prints_the_session(env, boxes, monkeypatch):
    """Stubbed: DescribeInstanceInformation (absent from moto): not registered, ConnectionLost, then Online."""
    inject(monkeypatch, ssm=_ping(None, "ConnectionLost", "Online"))
    assert state(boxes, "alice") == "stopped"
    result = run("box", "connect", "alice", "--instance-id", boxes["alice"], "--port", "22", "--poll", "0",
                 "--region", REGION, "--print")
    assert result.exit_code == 0, result.output
    assert state(boxes, "alice") == "running"
    assert result.stdout.strip() == (
        f"aws ssm start-session --target {boxes['alice']} --document-name AWS-StartSSHSession "
        f"--parameters portNumber=22 --region {REGION}")
    progress = result.stderr
    assert f"starting alice's box {boxes['alice']}" in progress
    assert "SSM agent not registered" in progress and "SSM agent ConnectionLost" in progress
    assert "SSM agent Online" in progress


def test_connect_to_a_running_box_starts_nothing(env, boxes, monkeypatch):
    """Stubbed: DescribeInstanceInformation (absent from moto) answers Online at once."""
    inject(monkeypatch, ssm=_ping("Online"))
    result = run("box", "connect", "bob", "--instance-id", boxes["bob"], "--port", "2222", "--print")
    assert result.exit_code == 0, result.output
    assert "portNumber=2222" in result.stdout and result.stderr == ""


def test_someone_elses_box_is_refused_with_one_line_exit_3(env, boxes, monkeypatch):
    """moto enforces no IAM: StartInstances alone is a Stubber answer, shaped as EC2 refuses it under S29."""
    refused = offline("ec2")
    stubber = Stubber(refused)
    stubber.add_client_error("start_instances", "UnauthorizedOperation", "You are not authorized to perform this operation.")
    stubber.activate()
    inject(monkeypatch, ec2=lambda c: Mixed(c.ec2, refused, {"start_instances"}), ssm=_ping())
    result = run("box", "connect", "alice", "--instance-id", boxes["alice"], "--print")
    assert result.exit_code == 3, result.output
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert f"starting alice's box {boxes['alice']}: AWS answered UnauthorizedOperation" in line
    assert "IAM permissions do not allow this" in line and result.stdout == ""


def test_an_agent_that_never_comes_online_times_out_with_exit_4(env, boxes, monkeypatch):
    """Stubbed: DescribeInstanceInformation (absent from moto) answers ConnectionLost, a state that never ends here."""
    inject(monkeypatch, ssm=_ping(*["ConnectionLost"] * 50))
    result = run("box", "connect", "bob", "--instance-id", boxes["bob"], "--timeout", "0.3", "--poll", "0.05", "--print")
    assert result.exit_code == 4, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert "SSM agent still ConnectionLost after 0.3s (--timeout)" in last and result.stdout == ""
    monkeypatch.setenv("DEVPROD_BOX_TIMEOUT", "0")  # the deadline from the environment too
    inject(monkeypatch, ssm=_ping("Inactive"))
    result = run("box", "connect", "bob", "--instance-id", boxes["bob"], "--print")
    assert result.exit_code == 4 and "after 0s" in result.stderr


def test_a_stopping_box_is_waited_down_within_the_deadline():
    """moto never shows `stopping` (its stop is instant): a stubbed EC2 stays stopping, so the bounded waiter gives up."""
    ec2 = offline("ec2")
    stubber = Stubber(ec2)
    stopping = {"Reservations": [{"Instances": [{"InstanceId": "i-0123456789abcdef0", "State": {"Name": "stopping", "Code": 64}}]}]}
    for _ in range(4):
        stubber.add_response("describe_instances", stopping)
    stubber.activate()
    said = []
    with pytest.raises(box.TimedOut, match=r"alice's box i-0123456789abcdef0 not stopped after 0.02s"):
        box.ensure_running(ec2, None, "alice", "i-0123456789abcdef0", box.Waiting(timeout=0.02, poll=0.01), said.append)
    assert said == ["alice's box i-0123456789abcdef0 is stopping; waiting for it to stop before starting it"]


def test_status_json_and_text_then_stop(env, boxes, monkeypatch):
    """Stubbed: DescribeInstanceInformation (absent from moto). Status finds bob's box by its tags."""
    inject(monkeypatch, ssm=_ping("Online", "Online"))
    result = run("box", "status", "bob", "--stack", boxes["stack"], "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["instanceId"] == boxes["bob"] and shown["state"] == "running"
    assert shown["instanceType"] == "t3.large" and shown["ssmPingStatus"] == "Online"
    assert isinstance(shown["uptimeSeconds"], int) and shown["uptimeSeconds"] >= 0
    monkeypatch.setenv("DEVPROD_DEVELOPER", "bob")  # NAME defaults to the developer
    result = run("box", "status", "--stack", boxes["stack"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["developer", "bob"] and lines[2].split() == ["state", "running"]
    assert all(len(line) <= 80 for line in lines)
    result = run("box", "stop", "--stack", boxes["stack"], "--wait", "--poll", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"bob's box {boxes['bob']}: stopped" and state(boxes, "bob") == "stopped"


def test_start_from_the_tags_then_again_when_running(env, boxes, monkeypatch):
    """Stubbed: DescribeInstanceInformation (absent from moto)."""
    inject(monkeypatch, ssm=_ping("Online", "Online"))
    result = run("box", "start", "alice", "--stack", boxes["stack"], "--poll", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"alice's box {boxes['alice']}: running, SSM agent Online"
    result = run("box", "start", "alice", "--stack", boxes["stack"], "--poll", "0")
    assert result.stdout.strip().endswith("(was already running)")


@pytest.mark.parametrize(
    "args, extra_env, message",
    [
        (["box", "status", "Root!"], {}, "NAME 'Root!' is not a developer name"),
        (["box", "status"], {"DEVPROD_DEVELOPER": "A B"}, "DEVPROD_DEVELOPER 'A B' is not a developer name"),
        (["box", "status", "nobody-here", "--stack", "nostack"], {}, "no instance tagged devprod:developer=nobody-here"),
        (["box", "connect", "alice", "--instance-id", "i-xyz; rm"], {}, "--instance-id 'i-xyz; rm' is not an EC2 instance id"),
    ],
)
def test_bad_names_and_unknown_boxes_are_one_line_exit_2(env, monkeypatch, args, extra_env, message):
    for key, value in extra_env.items():
        monkeypatch.setenv(key, value)
    result = run(*args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert message in line, line


def test_the_default_developer_comes_from_the_environment_then_the_user():
    assert box.default_developer({"DEVPROD_DEVELOPER": "alice"}, lambda: "bob") == ("alice", "DEVPROD_DEVELOPER")
    assert box.default_developer({}, lambda: "bob") == ("bob", "the local user name")

    def no_user():
        raise KeyError("uid 1234")

    with pytest.raises(BadInput, match="pass NAME or set DEVPROD_DEVELOPER"):
        box.default_developer({}, no_user)


@pytest.mark.parametrize("command", ["status", "start", "stop", "connect"])
def test_box_help_fits_80_columns_and_names_the_default(command):
    result = run("box", command, "--help")
    assert result.exit_code == 0, result.output
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
    if command != "connect":
        assert "DEVPROD_DEVELOPER" in result.stdout


def test_connect_without_the_aws_cli_says_what_is_missing_after_the_box_is_up(env, boxes, monkeypatch):
    """Stubbed: DescribeInstanceInformation (absent from moto). The test PATH has no aws and no plugin."""
    inject(monkeypatch, ssm=_ping("Online"))
    result = run("box", "connect", "bob", "--instance-id", boxes["bob"])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "cannot open the session, not on PATH: the AWS CLI (aws), the Session Manager plugin" in line


def test_status_of_a_stopped_box_has_no_agent_or_uptime(env, boxes):
    """A stopped box is not asked about (no SSM call at all, so nothing is stubbed)."""
    result = run("box", "status", "alice", "--instance-id", boxes["alice"], "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["state"], shown["ssmPingStatus"], shown["uptimeSeconds"]) == ("stopped", "-", None)


def test_start_and_stop_dry_runs_change_nothing(env, boxes):
    result = run("box", "start", "alice", "--stack", boxes["stack"], "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"dry run: would start alice's box {boxes['alice']} (now stopped); nothing changed"
    result = run("box", "stop", "bob", "--instance-id", boxes["bob"], "--dry-run")
    assert result.stdout.strip() == f"dry run: would stop bob's box {boxes['bob']} (now running); nothing changed"
    assert (state(boxes, "alice"), state(boxes, "bob")) == ("stopped", "running")
