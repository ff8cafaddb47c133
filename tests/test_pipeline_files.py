"""Files that only GitHub or CodeBuild execute, linted with real tools: actionlint, the workflow schema, shellcheck."""

from __future__ import annotations

import re
import subprocess

import pytest
from ruamel.yaml import YAML

from components.ci_identities import DRIFT_ENVIRONMENT, DRIFT_ROLE_VARIABLE, PREVIEW_ROLE_VARIABLE, PREVIEW_STACK, up_role_variable
from components.config import CI_UP_ENVIRONMENTS
from components.deploy_pipeline import build_spec
from components.github_repo import workflow_text
from policy import workflows
from tests.conftest import ROOT, VENV_BIN

CODEBUILD_BUILTINS = {"CODEBUILD_BUILD_ID", "CODEBUILD_SRC_DIR", "CODEBUILD_BUILD_SUCCEEDING"}


@pytest.fixture
def plan(prod_plan):
    return prod_plan


def assert_workflow_lints_clean(path, cwd):
    lint = subprocess.run([str(VENV_BIN / "actionlint"), str(path)], capture_output=True, text=True, cwd=cwd)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    schema = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True, text=True,
    )
    assert schema.returncode == 0, schema.stdout + schema.stderr


def project_env(plan, name):
    return {v["name"] for v in plan.named(name).inputs["environment"]["environmentVariables"]}


@pytest.mark.parametrize("branch", ["main", "release"])
def test_deploy_workflow_passes_actionlint_and_the_schema(tmp_path, branch):
    path = tmp_path / ".github" / "workflows" / "deploy.yml"
    path.parent.mkdir(parents=True)
    path.write_text(workflow_text(branch))
    assert_workflow_lints_clean(path, tmp_path)


def test_workflow_uses_oidc_and_no_stored_keys():
    text = workflow_text("main")
    data = YAML(typ="safe").load(text)
    assert data["permissions"] == {"id-token": "write", "contents": "read"}
    # The deploy role trusts only this environment (S27).
    assert data["jobs"]["deploy"]["environment"] == "production"
    assert data["concurrency"]["cancel-in-progress"] is False
    assert "secrets." not in text and "AWS_SECRET_ACCESS_KEY" not in text
    assert "revisionType=S3_OBJECT_VERSION_ID" in text and "name=COMMIT_SHA" in text


def _commands(spec_text: str) -> list[str]:
    spec = YAML(typ="safe").load(spec_text)
    assert spec["version"] == 0.2 and spec["env"]["shell"] == "bash"
    return [c for phase in spec["phases"].values() for c in phase["commands"]]


def _shellcheck(tmp_path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text("#!/bin/bash\n" + text + "\n")
    result = subprocess.run([str(VENV_BIN / "shellcheck"), "-S", "style", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_build_spec_parses_uses_only_defined_variables_and_is_shellcheck_clean(plan, tmp_path):
    commands = _commands(build_spec())
    defined = project_env(plan, "delivery-build") | {"COMMIT_SHA"} | CODEBUILD_BUILTINS
    used = {m for c in commands for m in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", c)}
    assert used - defined == set(), f"undefined: {used - defined}"
    assert plan.named("delivery-build").inputs["source"]["buildspec"] == build_spec()
    for index, command in enumerate(commands):
        _shellcheck(tmp_path, f"build-{index}.sh", command)


def test_build_spec_ships_only_the_release_tarball():
    spec = YAML(typ="safe").load(build_spec())
    assert spec["artifacts"] == {"base-directory": "../out", "files": ["release.tar.gz"]}
    assert "s3://" not in build_spec() and "aws " not in build_spec()  # it publishes nothing itself


REPO_WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
# Every workflow this repository runs or writes: its own, and the app's deploy workflow.
ALL_WORKFLOWS = {p.name: p.read_text() for p in REPO_WORKFLOWS} | {"app deploy.yml": workflow_text("main")}
PREVIEW_ROLE = "${{ vars.%s }}" % PREVIEW_ROLE_VARIABLE


def load(name):
    return YAML(typ="safe").load((ROOT / ".github" / "workflows" / name).read_text())


@pytest.mark.parametrize("workflow", REPO_WORKFLOWS, ids=lambda p: p.name)
def test_repository_workflows_pass_actionlint_and_the_schema(workflow):
    assert_workflow_lints_clean(workflow, ROOT)


def test_dependabot_keeps_every_workflow_current():
    path = ROOT / ".github" / "dependabot.yml"
    schema = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.dependabot", str(path)],
        capture_output=True, text=True,
    )
    assert schema.returncode == 0, schema.stdout + schema.stderr
    (update,) = YAML(typ="safe").load(path.read_text())["updates"]
    assert update["package-ecosystem"] == "github-actions" and update["schedule"]["interval"] == "weekly"
    # "/" reads .github/workflows; any other directory is read as a folder of workflow files.
    assert set(update["directories"]) == {"/", "/scripts/github"}


@pytest.mark.parametrize("name", sorted(ALL_WORKFLOWS))
def test_s28_every_action_is_pinned_to_a_commit_with_its_version(name):
    text = ALL_WORKFLOWS[name]
    assert list(workflows.uses_of(workflows.load(text))), name
    assert workflows.uses_problems(text) == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("    steps:\n      - uses: actions/checkout@v5\n", "uses 'actions/checkout@v5' is not pinned to a full commit SHA"),
        ("    steps:\n      - uses: actions/checkout@main\n", "uses 'actions/checkout@main' is not pinned to a full commit SHA"),
        ("    steps:\n      - uses: actions/checkout@fbc6f39 # v5.1.0\n", "uses 'actions/checkout@fbc6f39' is not pinned to a full commit SHA"),
        ("    steps:\n      - uses: actions/checkout@" + "a" * 40 + "\n", "uses 'actions/checkout@" + "a" * 40 + "' has no '# vX.Y.Z' comment naming its version"),
        ("    steps:\n      - uses: docker://alpine:3\n", "uses 'docker://alpine:3' is not pinned to an image digest"),
        ("    uses: org/repo/.github/workflows/x.yml@v1\n", "uses 'org/repo/.github/workflows/x.yml@v1' is not pinned to a full commit SHA"),
    ],
)
def test_s28_unpinned_uses_fail(text, expected):
    workflow = "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n" + text
    assert workflows.uses_problems(workflow) == [expected]


@pytest.mark.parametrize("name", sorted(ALL_WORKFLOWS))
def test_s27_no_secret_or_writing_identity_reachable_from_pull_requests(name):
    """Jobs a pull request starts: no `secrets.`, no `id-token: write` unless they name an environment;
    the only exception is a job whose every AWS role is the read-only preview role."""
    assert workflows.pull_request_exposures(ALL_WORKFLOWS[name], read_only_roles={PREVIEW_ROLE}) == []


def _edits(name, *pairs):
    text = ALL_WORKFLOWS[name]
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


@pytest.mark.parametrize(
    "name, pairs, expected",
    [
        ("ci.yml", [("      - run: make setup\n      - uses: aws-actions", "      - run: make setup\n        env:\n          TOKEN: ${{ secrets.DEVPROD_GITHUB_TOKEN }}\n      - uses: aws-actions")],
         "job 'preview' can run for a pull request without an environment and reads a secret"),
        ("ci.yml", [(PREVIEW_ROLE, "${{ vars.DEVPROD_DEV_UP_ROLE_ARN }}")],
         "job 'preview' can run for a pull request without an environment and may request an OIDC token (id-token: write)"),
        ("ci.yml", [("permissions:\n  contents: read\n", "permissions:\n  contents: read\n  id-token: write\n")],
         "job 'test' can run for a pull request without an environment and may request an OIDC token (id-token: write)"),
        ("ci.yml", [("permissions:\n  contents: read\n", "permissions: write-all\n")],
         "job 'test' can run for a pull request without an environment and may request an OIDC token (id-token: write)"),
        ("ci.yml", [("permissions:\n  contents: read\n", "")],
         "job 'test' can run for a pull request without an environment and sets no permissions (the repository default applies)"),
        ("drift.yml", [("  workflow_dispatch:\n", "  workflow_dispatch:\n  pull_request_target:\n"), ("    environment: drift\n", "")],
         "job 'refresh' can run for a pull request without an environment and reads a secret"),
        ("infra.yml", [("on:\n  push:", "on:\n  pull_request:\n  push:"), ("    environment: production\n", "")],
         "job 'up-prod' can run for a pull request without an environment and may request an OIDC token (id-token: write)"),
        ("app deploy.yml", [("on:\n  push:", "on:\n  pull_request:\n  push:"), ("    environment: production\n", "")],
         "job 'deploy' can run for a pull request without an environment and may request an OIDC token (id-token: write)"),
    ],
)
def test_s27_exposures_are_caught(name, pairs, expected):
    """Each edit breaks one real workflow the way S27 forbids; the checker names the job."""
    text = _edits(name, *pairs)
    assert expected in workflows.pull_request_exposures(text, read_only_roles={PREVIEW_ROLE})


def test_s27_jobs_in_environments_and_push_only_workflows_are_not_exposed():
    opened = _edits("infra.yml", ("on:\n  push:", "on:\n  pull_request:\n  push:"))
    assert workflows.pull_request_exposures(opened) == []
    push_only = _edits("infra.yml", ("    environment: production\n", ""))
    assert workflows.pull_request_exposures(push_only) == []


def test_s27_an_environmentless_job_with_credentials_reports_each_exposure():
    text = _edits("infra.yml", ("on:\n  push:", "on:\n  pull_request:\n  push:"), ("    environment: production\n", ""))
    assert workflows.pull_request_exposures(text, read_only_roles={PREVIEW_ROLE}) == [
        "job 'up-prod' can run for a pull request without an environment and reads a secret",
        "job 'up-prod' can run for a pull request without an environment and may request an OIDC token (id-token: write)",
    ]


def _aws_roles(job):
    return [
        (step.get("with") or {}).get("role-to-assume")
        for step in job.get("steps", [])
        if str(step.get("uses", "")).startswith(workflows.AWS_CREDENTIALS_ACTION)
    ]


def test_each_job_assumes_the_role_that_trusts_its_environment():
    """The variable a job reads is the role whose trust names that job's subject (components/ci_identities.py)."""
    var = "${{ vars.%s }}".__mod__
    ci, infra, drift = load("ci.yml"), load("infra.yml"), load("drift.yml")
    assert _aws_roles(ci["jobs"]["preview"]) == [var(PREVIEW_ROLE_VARIABLE)] and "environment" not in ci["jobs"]["preview"]
    by_stack = {job["steps"][-1]["with"]["stack-name"]: job for job in infra["jobs"].values()}
    assert set(by_stack) == set(CI_UP_ENVIRONMENTS)
    for stack, environment in CI_UP_ENVIRONMENTS.items():
        assert by_stack[stack]["environment"] == environment
        assert _aws_roles(by_stack[stack]) == [var(up_role_variable(stack))]
    assert drift["jobs"]["refresh"]["environment"] == DRIFT_ENVIRONMENT
    assert _aws_roles(drift["jobs"]["refresh"]) == [var(DRIFT_ROLE_VARIABLE)]


def test_secrets_only_in_the_production_and_drift_environments():
    """The GitHub admin credentials live in `production`; `drift` holds read-only ones under the same names."""
    for name in ("ci.yml", "infra.yml", "drift.yml"):
        for job_name, job in load(name)["jobs"].items():
            if "secrets." in str(job):
                assert job.get("environment") in ("production", DRIFT_ENVIRONMENT), (name, job_name)
    assert "secrets." not in str(load("infra.yml")["jobs"]["up-dev"])


def test_workflows_read_only_variables_the_stack_exports(prod_plan):
    exported = set(prod_plan.outputs["ci"]["actionsVariables"])
    # Set per environment by hand: the GitHub App of `production` (admin) and of `drift` (read-only).
    per_environment = {"DEVPROD_GITHUB_APP_CLIENT_ID"}
    used = {m for p in REPO_WORKFLOWS for m in re.findall(r"vars\.([A-Z0-9_]+)", p.read_text())}
    assert used - exported - per_environment == set()
    assert exported - used == set()


def test_repository_workflows_do_what_the_readme_says():
    ci, infra, drift = load("ci.yml"), load("infra.yml"), load("drift.yml")
    assert ci["jobs"]["test"]["steps"][-1]["run"] == 'sudo -E env "PATH=$PATH" make test'
    diff_step = ci["jobs"]["offline-diff"]["steps"][-1]["run"]
    assert "--diff" in diff_step and "--fail-on-replace" in diff_step and "GITHUB_STEP_SUMMARY" in diff_step
    assert ci["jobs"]["offline-diff"]["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    preview = next(s for s in ci["jobs"]["preview"]["steps"] if str(s.get("uses", "")).startswith("pulumi/actions"))
    assert preview["with"]["command"] == "preview" and preview["with"]["edit-pr-comment"] is True
    assert preview["with"]["stack-name"] == PREVIEW_STACK and "env" not in preview
    assert "head.repo.full_name == github.repository" in ci["jobs"]["preview"]["if"]
    assert infra["jobs"]["up-prod"]["environment"] == "production" and infra["jobs"]["up-prod"]["needs"] == "up-dev"
    token = next(s for s in infra["jobs"]["up-prod"]["steps"] if s.get("id") == "github-app")
    assert token["uses"].startswith("actions/create-github-app-token@") and token["with"]["repositories"]
    assert "--preview-only --expect-no-changes" in drift["jobs"]["refresh"]["steps"][-1]["run"]
    assert drift["on"]["schedule"][0]["cron"]
