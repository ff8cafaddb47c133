"""Files that only GitHub or CodeBuild execute, linted with real tools: actionlint, the workflow schema, shellcheck."""

from __future__ import annotations

import re
import subprocess

import pytest
from ruamel.yaml import YAML

from components.deploy_pipeline import build_spec
from components.github_repo import workflow_text
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


@pytest.mark.parametrize("workflow", REPO_WORKFLOWS, ids=lambda p: p.name)
def test_repository_workflows_pass_actionlint_and_the_schema(workflow):
    assert_workflow_lints_clean(workflow, ROOT)


def test_repository_workflows_do_what_the_readme_says():
    load = lambda name: YAML(typ="safe").load((ROOT / ".github" / "workflows" / name).read_text())  # noqa: E731
    ci, infra, drift = load("ci.yml"), load("infra.yml"), load("drift.yml")
    assert ci["jobs"]["test"]["steps"][-1]["run"] == "make test"
    diff_step = ci["jobs"]["offline-diff"]["steps"][-1]["run"]
    assert "--diff" in diff_step and "--fail-on-replace" in diff_step and "GITHUB_STEP_SUMMARY" in diff_step
    preview = next(s for s in ci["jobs"]["preview"]["steps"] if str(s.get("uses", "")).startswith("pulumi/actions"))
    assert preview["with"]["command"] == "preview" and preview["with"]["edit-pr-comment"] is True
    assert "head.repo.full_name == github.repository" in ci["jobs"]["preview"]["if"]
    assert infra["jobs"]["up-prod"]["environment"] == "production" and infra["jobs"]["up-prod"]["needs"] == "up-dev"
    assert "--preview-only --expect-no-changes" in drift["jobs"]["refresh"]["steps"][-1]["run"]
    assert drift["on"]["schedule"][0]["cron"]
    assert len(REPO_WORKFLOWS) == 3
