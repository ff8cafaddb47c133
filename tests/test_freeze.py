"""`devprod freeze` / `unfreeze` and the freeze line of `devprod status`.

STS runs on moto's server. moto's CodePipeline has no GetPipelineState,
DisableStageTransition or EnableStageTransition, so those three calls (and
only they) are answered by botocore's Stubber, with the shapes of the API
model; the stub also checks the exact request devprod sends.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest
import typer
from botocore.stub import Stubber
from typer.testing import CliRunner

from devprod import delivery_cli, freeze
from devprod.aws import Clients
from devprod.errors import BadInput
from devprod.release import RELEASE_STAGE
from tests.aws_clients import REGION, offline

PIPELINE = "AppPipeline"
WHEN = datetime(2026, 11, 28, 9, 12, tzinfo=timezone.utc)


def pipeline_state(enabled: bool, reason: str | None = None) -> dict:
    transition = {"enabled": enabled, "lastChangedBy": "arn:aws:iam::123456789012:user/alice", "lastChangedAt": WHEN}
    if reason:
        transition["disabledReason"] = reason
    return {"pipelineName": PIPELINE, "stageStates": [
        {"stageName": "Source"}, {"stageName": "Test"}, {"stageName": "Release", "inboundTransitionState": transition},
    ]}


class Pipeline:
    """A stubbed CodePipeline client; each test queues the answers it expects, in order."""

    def __init__(self):
        self.client = offline("codepipeline")
        self.stubber = Stubber(self.client)
        self.stubber.activate()

    def state(self, enabled: bool, reason: str | None = None) -> "Pipeline":
        self.stubber.add_response("get_pipeline_state", pipeline_state(enabled, reason), {"name": PIPELINE})
        return self

    def disable(self, reason: str) -> "Pipeline":
        expected = {"pipelineName": PIPELINE, "stageName": "Release", "transitionType": "Inbound", "reason": reason}
        self.stubber.add_response("disable_stage_transition", {}, expected)
        return self

    def enable(self) -> "Pipeline":
        expected = {"pipelineName": PIPELINE, "stageName": "Release", "transitionType": "Inbound"}
        self.stubber.add_response("enable_stage_transition", {}, expected)
        return self


@pytest.fixture
def env(aws_env, monkeypatch):
    for key in [k for k in os.environ if k.startswith(("AWS_", "DEVPROD_"))]:
        monkeypatch.delenv(key)
    for key, value in aws_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_REGION", REGION)
    return aws_env


def invoke(monkeypatch, env, pipeline: Pipeline, *args):
    def clients(*_args):
        return Clients(region=REGION, endpoint_url=env["AWS_ENDPOINT_URL"]).use("codepipeline", pipeline.client)

    monkeypatch.setattr(delivery_cli, "build_clients", clients)
    app = typer.Typer(add_completion=False, rich_markup_mode=None)
    delivery_cli.register(app)
    return CliRunner().invoke(app, list(args))


def test_the_frozen_stage_is_the_one_the_pipeline_deploys_in():
    assert freeze.FROZEN_STAGE == RELEASE_STAGE


# ------------------------------------------------------------------ the reason


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Black Friday (until Monday)", "Black Friday (until Monday) (by alice)"),
        ("  incident 42 - db migration!  ", "incident 42 - db migration! (by alice)"),
    ],
)
def test_a_reason_is_the_text_and_who(text, expected):
    assert freeze.reason_text(text, "alice") == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "--reason: say why deploys are frozen"),
        ("   ", "--reason: say why deploys are frozen"),
        ("release 1.2: hold", "--reason 'release 1.2: hold': CodePipeline takes only letters, digits, spaces and ! @ ( ) . * ? -, not ':'"),
        ("ça/va", "not '/' 'ç'"),
        ("x" * 290, "--reason is 290 characters; at most 289 fit with '(by alice)'"),
    ],
)
def test_a_reason_codepipeline_cannot_store_is_refused_naming_the_flag(text, message):
    with pytest.raises(BadInput) as error:
        freeze.reason_text(text, "alice")
    assert message in str(error.value)


@pytest.mark.parametrize(
    "arn, expected",
    [
        ("arn:aws:iam::123456789012:user/alice", "alice"),
        ("arn:aws:sts::123456789012:assumed-role/Ops_Admin/alice@example.com", "Ops-Admin alice@example.com"),
        ("arn:aws:iam::123456789012:root", "root"),
    ],
)
def test_who_is_the_caller_in_characters_a_reason_may_hold(arn, expected):
    sts = offline("sts")
    with Stubber(sts) as stub:
        stub.add_response("get_caller_identity", {"Arn": arn, "Account": "123456789012", "UserId": "AIDA"})
        assert freeze.who(sts) == expected


# ------------------------------------------------------------------ the commands


@pytest.mark.slow
def test_freeze_then_status_then_unfreeze(env, monkeypatch):
    # moto's STS answers every caller as this user.
    reason = "Black Friday (by moto)"
    pipeline = Pipeline().state(True).disable(reason).state(False, reason)
    result = invoke(monkeypatch, env, pipeline, "freeze", "--pipeline", PIPELINE, "--reason", "Black Friday")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{PIPELINE}: frozen; deploys: FROZEN since 2026-11-28 09:12 UTC: {reason}"
    pipeline.stubber.assert_no_pending_responses()

    pipeline = Pipeline().state(False, reason).enable().state(True)
    result = invoke(monkeypatch, env, pipeline, "unfreeze", "--pipeline", PIPELINE)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{PIPELINE}: unfrozen; deploys: open (Release takes new executions")
    pipeline.stubber.assert_no_pending_responses()


@pytest.mark.slow
def test_freezing_a_frozen_pipeline_changes_nothing_and_says_so(env, monkeypatch):
    pipeline = Pipeline().state(False, "incident 7 (by bob)")  # no disable queued: a call would fail the stub
    result = invoke(monkeypatch, env, pipeline, "freeze", "--pipeline", PIPELINE, "--reason", "again")
    assert result.exit_code == 0 and "already frozen, left as it was" in result.stdout
    assert "incident 7 (by bob)" in result.stdout
    pipeline = Pipeline().state(True)
    result = invoke(monkeypatch, env, pipeline, "unfreeze", "--pipeline", PIPELINE)
    assert result.exit_code == 0 and result.stdout.startswith(f"{PIPELINE}: was not frozen; deploys: open")


@pytest.mark.slow
def test_a_bad_reason_is_refused_before_the_pipeline_is_asked(env, monkeypatch):
    pipeline = Pipeline()  # nothing queued
    result = invoke(monkeypatch, env, pipeline, "freeze", "--pipeline", PIPELINE, "--reason", "v1.2; ship it")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: --reason 'v1.2; ship it': CodePipeline takes only letters, digits, spaces and ! @ ( ) . * ? -, not ';'"
    ]


@pytest.mark.slow
def test_aws_refusals_and_a_pipeline_without_release_are_one_line(env, monkeypatch):
    pipeline = Pipeline()
    pipeline.stubber.add_response("get_pipeline_state", pipeline_state(True), {"name": PIPELINE})
    pipeline.stubber.add_client_error("disable_stage_transition", "AccessDeniedException", "not allowed")
    result = invoke(monkeypatch, env, pipeline, "freeze", "--pipeline", PIPELINE, "--reason", "hold")
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines() == [
        f"error: disabling the transition into Release of pipeline {PIPELINE}: AWS answered AccessDeniedException: "
        "not allowed (the caller's IAM permissions do not allow this)"
    ]
    pipeline = Pipeline()
    pipeline.stubber.add_response("get_pipeline_state", {"pipelineName": PIPELINE, "stageStates": [{"stageName": "Deploy"}]})
    result = invoke(monkeypatch, env, pipeline, "unfreeze", "--pipeline", PIPELINE)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --pipeline {PIPELINE}: it has no Release stage (not a devprod pipeline?)"


def test_status_shows_the_freeze_or_why_it_is_unknown(monkeypatch):
    from devprod import cli

    pipeline = Pipeline().state(False, "incident 7 (by bob)")
    state, problem = cli._freeze_state(Clients(region=REGION).use("codepipeline", pipeline.client), PIPELINE)
    assert problem is None and state.line() == "deploys: FROZEN since 2026-11-28 09:12 UTC: incident 7 (by bob)"
    pipeline = Pipeline()
    pipeline.stubber.add_client_error("get_pipeline_state", "PipelineNotFoundException", "no such pipeline")
    state, problem = cli._freeze_state(Clients(region=REGION).use("codepipeline", pipeline.client), PIPELINE)
    assert state is None and "PipelineNotFoundException" in problem


def test_an_html_error_page_is_one_short_line():
    """An endpoint that is not AWS (or moto on a call it lacks) answers a page of HTML."""
    pipeline = Pipeline()
    pipeline.stubber.add_client_error("get_pipeline_state", "500", "<!doctype html>\n<html>\n<title>500</title>\n</html>")
    _, problem = __import__("devprod.cli").cli._freeze_state(Clients(region=REGION).use("codepipeline", pipeline.client), PIPELINE)
    assert problem == f"reading the state of pipeline {PIPELINE}: AWS answered 500: (an HTML error page)"


@pytest.mark.slow
def test_a_bad_reason_is_refused_even_without_credentials(env, monkeypatch):
    """The newcomer review's case: the reason is checked before STS is asked who the caller is."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "")
    pipeline = Pipeline()
    for reason in ("Black Friday; until Monday", ""):
        result = invoke(monkeypatch, env, pipeline, "freeze", "--pipeline", PIPELINE, "--reason", reason,
                        "--endpoint-url", "http://127.0.0.1:9")
        assert result.exit_code == 2 and result.stderr.startswith("error: --reason"), result.output


def test_an_unknown_region_is_refused_by_name_before_any_call(monkeypatch):
    """The newcomer review's case: freeze/unfreeze (and trace, history) check the region as the other commands do."""
    from devprod import cli

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    result = CliRunner().invoke(cli.app, ["unfreeze", "--pipeline", PIPELINE, "--region", "eu-cental-1"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --region 'eu-cental-1' is not an AWS region; did you mean eu-central-1?"
