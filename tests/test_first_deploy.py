"""scripts/host/devprod-first-deploy.sh run for real: the real AWS CLI against moto's SSM server.

The deploy document here is a stand-in whose "deploy" step records the
environment it was run with (the real document runs deploy.sh as root under
/srv/app, which tests/test_deploy_script.py covers through its own harness);
what is checked is that the host runs the document's own step text with the
values SSM would give it, and nothing when the live release is unset.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from components.production_service import FIRST_DEPLOY_FILE, deploy_document
from devprod.contracts import LIVE_RELEASE_UNSET, live_release_parameter, live_release_value
from tests.aws_clients import client

pytestmark = pytest.mark.skipif(shutil.which("aws") is None, reason="needs the AWS CLI")

SHA = "0123456789abcdef0123456789abcdef01234567"
SUM = "a" * 64
PARAMETER = live_release_parameter("prod")


def _document(record: str) -> str:
    """A schema 2.2 document shaped like the real one, whose step records what it received."""
    return json.dumps({
        "schemaVersion": "2.2",
        "description": "stand-in",
        "parameters": {"release": {"type": "String", "default": ""}},
        "mainSteps": [{"action": "aws:runShellScript", "name": "deploy", "inputs": {"runCommand": [
            "set -eu",
            'export RELEASE="${SSM_release:-}" ACTION="${SSM_action:-deploy}" CHECKSUM="${SSM_checksum:-}"',
            f"printf '%s %s %s\\n' \"$RELEASE\" \"$CHECKSUM\" \"$ACTION\" >> {record}",
        ]}}],
    })


@pytest.fixture
def ssm(aws_env, tmp_path):
    ssm = client("ssm", aws_env)
    name = f"first-deploy-{tmp_path.name}"[:120]
    ssm.create_document(Content=_document(str(tmp_path / "ran")), Name=name, DocumentType="Command",
                        DocumentFormat="JSON")
    return ssm, name


def _run(aws_env, document, tmp_path):
    env = {**os.environ, **aws_env, "LIVE_RELEASE_PARAMETER": PARAMETER, "DOCUMENT": document,
           "REGION": "eu-central-1"}
    return subprocess.run(["bash", str(FIRST_DEPLOY_FILE)], env=env, capture_output=True, text=True, timeout=60)


def test_an_unset_live_release_deploys_nothing(ssm, aws_env, tmp_path):
    client_, document = ssm
    client_.put_parameter(Name=PARAMETER, Value=LIVE_RELEASE_UNSET, Type="String", Overwrite=True)
    result = _run(aws_env, document, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "waiting for the first deploy" in result.stderr
    assert not (tmp_path / "ran").exists()


def test_the_live_release_is_deployed_through_the_documents_own_step(ssm, aws_env, tmp_path):
    client_, document = ssm
    client_.put_parameter(Name=PARAMETER, Value=live_release_value(SHA, SUM), Type="String", Overwrite=True)
    result = _run(aws_env, document, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ran").read_text() == f"{SHA} {SUM} deploy\n"


@pytest.mark.parametrize("value", [f"{SHA}", f"{SHA} {SUM}; rm -rf /", f"{SHA.upper()} {SUM}", "$(id)"])
def test_a_malformed_live_release_is_refused_before_anything_runs(ssm, aws_env, tmp_path, value):
    client_, document = ssm
    client_.put_parameter(Name=PARAMETER, Value=value, Type="String", Overwrite=True)
    result = _run(aws_env, document, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "is not '<sha> <sha256>'" in result.stderr
    assert not (tmp_path / "ran").exists()


def test_a_missing_document_is_a_clear_failure(aws_env, tmp_path):
    client("ssm", aws_env).put_parameter(Name=PARAMETER, Value=live_release_value(SHA, SUM), Type="String",
                                         Overwrite=True)
    result = _run(aws_env, "no-such-document", tmp_path)
    assert result.returncode == 3
    assert "cannot read the deploy document no-such-document" in result.stderr


def test_the_real_document_reads_the_values_the_first_deploy_gives(tmp_path):
    """The environment names the stand-in relies on are the real document's (S18: ENV_VAR)."""
    from tests.component_plans import BUCKET
    from components.config import ProductionSettings

    real = json.loads(deploy_document(ProductionSettings(start_command="node server.js"), BUCKET, "/devprod/prod/app/"))
    (step,) = [s for s in real["mainSteps"] if s["name"] == "deploy"]
    assert 'export RELEASE="${SSM_release:-}" ACTION="${SSM_action:-deploy}" CHECKSUM="${SSM_checksum:-}"' in \
        step["inputs"]["runCommand"]
    assert {p["interpolationType"] for p in real["parameters"].values()} == {"ENV_VAR"}
