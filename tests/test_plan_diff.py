"""`devprod plan --diff`: additions, in-place changes, replacement warnings, retained removals, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devprod.cli import app
from devprod.diff import MARKDOWN_LIMIT, compare, markdown
from tests.conftest import ROOT, STACKS, write_stack

runner = CliRunner()
DAVE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMF6oIOB13KcUJRUajc0dZQKQN+1SvR1BVAl/kIXA6vP dave@laptop"


@pytest.fixture
def project(tmp_path) -> Path:
    write_stack(tmp_path, "dev", (STACKS / "Pulumi.dev.yaml").read_text())
    result = runner.invoke(app, ["plan", "dev", "--json", "--project-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (tmp_path / "base.json").write_text(result.stdout)
    return tmp_path


def diff(project, *extra):
    return runner.invoke(app, ["plan", "dev", "--diff", str(project / "base.json"), "--project-dir", str(project), *extra])


def edit(project, old, new):
    path = project / "Pulumi.dev.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_onboarding_is_all_additions_with_the_added_cost(project):
    result = runner.invoke(app, ["onboard", "dave", "--ssh-key", "-", "--project-dir", str(project)], input=DAVE)
    assert result.exit_code == 0
    result = diff(project, "--cost", "--fail-on-replace")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "**15 to add, 0 to change in place, 0 to replace, 0 to remove**" in text
    assert "estimated monthly cost +" in text and "+0.00" not in text
    rows = [l for l in text.splitlines() if l.startswith("| ") and not l.startswith("| |")]
    assert rows and all(r.startswith("| + | `dave") for r in rows), rows
    assert "Replacement" not in text


def test_instance_type_change_is_in_place(project):
    edit(project, "instanceType: t3.xlarge", "instanceType: t3.2xlarge")
    result = diff(project, "--json", "--fail-on-replace")
    assert result.exit_code == 0, result.output
    (change,) = json.loads(result.stdout)["changes"]
    assert change["name"] == "bob-box" and change["kind"] == "update" and change["properties"] == ["instanceType"]


def test_moving_a_box_to_another_subnet_warns_and_fails_on_replace(project):
    edit(project, "    - name: alice\n", "    - name: alice\n      availabilityZone: eu-central-1b\n")
    result = diff(project)
    assert result.exit_code == 0, result.output
    assert "> **Replacement**: `alice-box` (Instance) because subnetId changed" in result.stdout
    assert "> **Replacement**: `alice-home` (Volume) because availabilityZone changed" in result.stdout
    result = diff(project, "--fail-on-replace")
    assert result.exit_code == 1
    assert "alice-box (replace)" in result.stderr and "alice-home (replace)" in result.stderr


def test_offboarding_passes_fail_on_replace_and_says_why_the_box_goes(project):
    """Removing a developer is the intended way to delete their box; the home volume stays."""
    assert runner.invoke(app, ["offboard", "carol", "--project-dir", str(project)]).exit_code == 0
    result = diff(project, "--fail-on-replace")
    assert result.exit_code == 0, result.output
    assert "> `carol-home` leaves the stack but is **retained** in AWS (retainOnDelete)." in result.stdout
    assert ("> `carol-box` is deleted as expected: developer carol left the roster; their home volume is retained."
            in result.stdout)


def test_a_box_deleted_while_its_developer_stays_is_still_data_loss(project):
    base = json.loads((project / "base.json").read_text())
    head = json.loads(json.dumps(base))
    head["resources"] = [r for r in head["resources"] if r["name"] != "carol-box"]
    changes = compare(base, head)
    assert [(c.name, c.kind) for c in changes.risky] == [("carol-box", "remove")]
    # and a home volume that is not retained, even with its developer gone, is data loss too
    for r in base["resources"]:
        if r["name"] == "carol-home":
            r["options"]["retainOnDelete"] = False
    gone = {"carol", "carol-box", "carol-home"}
    head = {**base, "resources": [r for r in base["resources"] if r["name"] not in gone and not r["name"].startswith("carol-")]}
    assert [(c.name, c.kind) for c in compare(base, head).risky] == [("carol-home", "remove")]


def test_ignored_properties_do_not_count_as_changes():
    base = {"resources": [{"urn": "u", "name": "b", "type": "aws:ec2/instance:Instance", "inputs": {"ami": "ami-1", "userData": "a"},
                           "options": {"ignoreChanges": ["ami", "userData"]}}]}
    head = json.loads(json.dumps(base))
    head["resources"][0]["inputs"].update(ami="ami-2", userData="b")
    assert compare(base, head).changes == []
    head["resources"][0]["options"]["ignoreChanges"] = []
    (change,) = compare(base, head).changes
    assert change.kind == "replace" and change.replace_reasons == ["ami"]  # userData replaces only with userDataReplaceOnChange


def test_markdown_stays_under_the_comment_limit():
    resources = [{"urn": f"u{i}", "name": f"dev{i:04d}-box-with-a-long-name", "type": "aws:ec2/instance:Instance",
                  "inputs": {}, "options": {}} for i in range(3000)]
    text = markdown(compare({"resources": []}, {"stack": "dev", "resources": resources}), "origin/main")
    assert len(text) < MARKDOWN_LIMIT and "more rows left out" in text
    assert text.splitlines()[2].startswith("**3000 to add")


@pytest.mark.slow
def test_diff_against_a_git_ref_plans_the_base_in_its_own_process(tmp_path):
    """A repository of its own (the program linked in, the suite's dev stack committed), so the
    result depends neither on the team's roster nor on uncommitted work in this checkout."""
    for name in ("components", "scripts", "policy"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("__main__.py", "Pulumi.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copy(STACKS / "Pulumi.dev.yaml", tmp_path / "Pulumi.dev.yaml")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    result = runner.invoke(app, ["plan", "dev", "--diff", "HEAD", "--project-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "**0 to add, 0 to change in place, 0 to replace, 0 to remove**" in result.stdout
    result = runner.invoke(app, ["plan", "dev", "--diff", "no-such-ref", "--project-dir", str(tmp_path)])
    assert result.exit_code == 2 and "git archive no-such-ref" in result.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        ("this is not json", "not a saved plan (`devprod plan dev --json`)"),
        ('{"hello": 1}', "not a saved plan: it has no resources list"),
        ('{"stack": "prod", "resources": []}', "a plan of stack 'prod', not 'dev'"),
    ],
)
def test_a_base_that_is_not_this_stacks_plan_is_refused(project, content, message):
    (project / "base.json").write_text(content)
    result = diff(project)
    assert result.exit_code == 2 and message in result.stderr, result.output
