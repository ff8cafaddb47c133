"""scripts/ssm-deploy.sh (the deploy stage's polling logic) run for real against moto's EC2 and SSM.

moto's server really answers DescribeInstances, SendCommand and
GetCommandInvocation; it reports every command as Success. The failure and
timeout cases put tests/fixtures/bin/aws-status-override in front of the real
CLI, which changes only the Status answer of GetCommandInvocation.
"""

from __future__ import annotations

import os
import subprocess

import boto3
import pytest

from components.config import ProductionSettings
from components.production_service import deploy_document
from tests.conftest import ROOT, VENV_BIN

SCRIPT = ROOT / "scripts" / "ssm-deploy.sh"
SHA = "0123456789abcdef0123456789abcdef01234567"

pytestmark = pytest.mark.slow


@pytest.fixture
def target(aws_env, tmp_path):
    kwargs = dict(endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="eu-central-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
    ec2 = boto3.client("ec2", **kwargs)
    ssm = boto3.client("ssm", **kwargs)
    stack = f"prod{tmp_path.name[-6:].replace('_', '')}"
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    reservation = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.small",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "devprod:stack", "Value": stack}, {"Key": "devprod:role", "Value": "production"}]}],
    )
    instance = reservation["Instances"][0]["InstanceId"]
    name = f"devprod-deploy-{stack}"
    content = deploy_document(ProductionSettings(start_command="node server.js"), "bucket", "/devprod/prod/app/")
    ssm.create_document(Content=content, Name=name, DocumentType="Command", DocumentFormat="JSON")
    return {"stack": stack, "instance": instance, "document": name, "ssm": ssm}


def run(aws_env, target, aws_cli=None, **extra):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **aws_env,
           "DOCUMENT_NAME": target["document"], "TARGET_STACK": target["stack"], "COMMIT_SHA": SHA,
           "POLL_SECONDS": "1", "AWS_CLI": aws_cli or str(VENV_BIN / "aws"), "REAL_AWS": str(VENV_BIN / "aws"), **extra}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)


def test_success_sends_the_document_to_the_tagged_instance(aws_env, target):
    result = run(aws_env, target, LOG_GROUP="/devprod/prod/deploy")
    assert result.returncode == 0, result.stderr
    assert f"{target['instance']}: Success" in result.stderr and "deploy succeeded" in result.stderr
    (command,) = target["ssm"].list_commands(InstanceId=target["instance"])["Commands"]
    assert command["DocumentName"] == target["document"]
    assert command["Parameters"] == {"release": [SHA], "action": ["deploy"]}
    assert command["MaxConcurrency"] == "1" and command["MaxErrors"] == "0"
    # moto's ListCommands does not return CloudWatchOutputConfig, so that flag is not checked here.


def test_failure_exits_1(aws_env, target):
    result = run(aws_env, target, aws_cli=str(ROOT / "tests/fixtures/bin/aws-status-override"), STATUS_OVERRIDE="Failed")
    assert result.returncode == 1, result.stderr
    assert f"{target['instance']}: Failed" in result.stderr and "deploy failed" in result.stderr


def test_timeout_exits_2(aws_env, target):
    result = run(aws_env, target, aws_cli=str(ROOT / "tests/fixtures/bin/aws-status-override"),
                 STATUS_OVERRIDE="InProgress", DEPLOY_TIMEOUT="3")
    assert result.returncode == 2, result.stderr
    assert "timed out after 3s" in result.stderr


@pytest.mark.parametrize("extra, message", [
    ({"COMMIT_SHA": "main"}, "COMMIT_SHA is not a git sha"),
    ({"TARGET_STACK": "nothing-here"}, "no running instance tagged devprod:stack=nothing-here"),
    ({"DOCUMENT_NAME": ""}, "DOCUMENT_NAME and TARGET_STACK are required"),
])
def test_bad_input_or_no_target_exits_3(aws_env, target, extra, message):
    result = run(aws_env, target, **extra)
    assert result.returncode == 3 and message in result.stderr, result.stderr
