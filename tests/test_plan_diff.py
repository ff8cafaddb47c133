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


def unwrapped(text: str) -> str:
    """The markdown with wrapped quote and list lines joined again (lines wrap at 80 columns)."""
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("> ") and out and out[-1].startswith("> ") and not line.startswith(("> **", "> `")):
            out[-1] += " " + line[2:]
        elif line.startswith("  ") and out and out[-1].startswith("- "):
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return "\n".join(out)


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
    text = unwrapped(result.stdout)
    assert "**14 to add, 0 to change in place, 0 to replace, 0 to remove**" in text
    (total,) = [l for l in text.splitlines() if l.startswith("Estimated monthly cost +")]
    (header,) = [l for l in text.splitlines() if l.startswith("#### ")]
    assert header.startswith("#### DeveloperInstance dave: 14 to add, +") and total.split()[3] in header
    rows = [l for l in text.splitlines() if l.startswith("- ")]
    assert len(rows) == 14 and all(r.startswith("- `+` `dave") for r in rows), rows
    # what a reviewer checks in an added box: its type, disk, metadata, address, options
    assert ("- `+` `dave-box` Instance: t3.large, root 30 GB encrypted, IMDSv2 required, public IP "
            "[ignoreChanges: ami, userData]") in rows
    assert "- `+` `dave-home` Volume: 50 GB gp3, eu-central-1a, encrypted [retainOnDelete]" in rows
    assert "- `+` `dave-stop` Schedule: stop at 20:00 mon,tue,wed,thu,fri Europe/Berlin" in rows
    assert "- `+` `dave-sg` SecurityGroup: no ingress" in rows
    assert "Replacement" not in text


def test_instance_type_change_is_in_place(project):
    edit(project, "instanceType: t3.xlarge", "instanceType: t3.2xlarge")
    result = diff(project, "--json", "--fail-on-replace")
    assert result.exit_code == 0, result.output
    (change,) = json.loads(result.stdout)["changes"]
    assert change["name"] == "bob-box" and change["kind"] == "update" and change["properties"] == ["instanceType"]
    assert change["component"] == "DeveloperInstance bob" and change["values"] == {"instanceType": ["t3.xlarge", "t3.2xlarge"]}
    assert "- `~` `bob-box` Instance: instanceType t3.xlarge → t3.2xlarge" in diff(project).stdout


def test_moving_a_box_to_another_subnet_warns_and_fails_on_replace(project):
    edit(project, "    - name: alice\n", "    - name: alice\n      availabilityZone: eu-central-1b\n")
    result = diff(project)
    assert result.exit_code == 0, result.output
    text = unwrapped(result.stdout)
    assert "> **Replacement**: `alice-box` (Instance) because subnetId changed" in text
    assert ("> **Replacement**: `alice-home` (Volume) because availabilityZone changed; AWS creates a new one and the "
            "old one stays in AWS, outside the stack (retainOnDelete).") in text
    assert "`alice-box` (Instance) because subnetId changed; AWS deletes and recreates it." in text
    result = diff(project, "--fail-on-replace")
    assert result.exit_code == 1
    assert "alice-box (replace)" in result.stderr and "alice-home (replace)" in result.stderr


def test_offboarding_passes_fail_on_replace_and_says_why_the_box_goes(project):
    """Removing a developer is the intended way to delete their box; the home volume stays."""
    assert runner.invoke(app, ["offboard", "carol", "--project-dir", str(project)]).exit_code == 0
    result = diff(project, "--fail-on-replace")
    assert result.exit_code == 0, result.output
    text = unwrapped(result.stdout)
    assert ("> `carol-home` leaves the stack as expected and is **retained** in AWS (retainOnDelete): developer "
            "carol left the roster; their home volume is retained.") in text
    assert "`carol-home` is deleted" not in text and "`carol-home` leaves the stack but" not in text
    assert "> `carol-box` is deleted as expected: developer carol left the roster; their home volume is retained." in text
    section = text[text.index("#### DeveloperInstance carol: 15 to remove"):]
    assert " ".join(section.splitlines()[2:4]) == ("Removed as expected: developer carol left the roster; their home "
                                                   "volume is retained.")


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
    # Not an update or a replacement (`pulumi up` does neither), but reported as ignored.
    (change,) = compare(base, head).changes
    assert (change.kind, change.properties, change.ignored, change.data_loss) == ("ignored", [], ["ami", "userData"], False)
    head["resources"][0]["options"]["ignoreChanges"] = []
    (change,) = compare(base, head).changes
    assert change.kind == "replace" and change.replace_reasons == ["ami"]  # userData replaces only with userDataReplaceOnChange


def test_markdown_stays_under_the_comment_limit():
    resources = [{"urn": f"u{i}", "name": f"dev{i:04d}-box-with-a-long-name", "type": "aws:ec2/instance:Instance",
                  "inputs": {}, "options": {}} for i in range(3000)]
    text = markdown(compare({"resources": []}, {"stack": "dev", "resources": resources}), "origin/main")
    assert len(text) < MARKDOWN_LIMIT and "more changes left out" in text
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
        ('{"stack": "dev", "resources": [{"name": "x"}]}', "not a saved plan: resources[0] has no urn, type, inputs, options"),
    ],
)
def test_a_base_that_is_not_this_stacks_plan_is_refused(project, content, message):
    (project / "base.json").write_text(content)
    result = diff(project)
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_the_diff_is_grouped_by_component_and_priced_with_each_sides_own_schedules(project):
    """Offboard carol, put bob (always on) on office hours, onboard dave: each developer's
    changes under their own heading with that component's cost change; the base is priced
    with its own schedules (bob always on, carol still there), not with the head's."""
    from devprod import cost

    assert runner.invoke(app, ["offboard", "carol", "--project-dir", str(project)]).exit_code == 0
    edit(project, "      schedule: always-on\n", "")
    assert runner.invoke(app, ["onboard", "dave", "--ssh-key", "-", "--project-dir", str(project)], input=DAVE).exit_code == 0
    result = diff(project, "--cost")
    assert result.exit_code == 0, result.output
    headers = [l for l in result.stdout.splitlines() if l.startswith("#### ")]
    assert [h.split(":")[0] for h in headers] == ["#### DeveloperInstance bob", "#### DeveloperInstance carol",
                                                   "#### DeveloperInstance dave"]
    sections = result.stdout.split("#### ")[1:]
    for section in sections:
        owner = section.split(":")[0].split()[-1]
        names = [l.split("`")[3] for l in section.splitlines() if l.startswith("- ")]
        assert names and all(n == owner or n.startswith(owner + "-") for n in names), (owner, names)
    assert all(len(line) <= 80 for line in result.stdout.splitlines())

    p = cost.region_prices("eu-central-1")
    office = 60 / 168 * 730
    bob = (office - 730) * (p["instance_hour"]["t3.xlarge"] + p["public_ipv4_hour"])
    base = json.loads((project / "base.json").read_text())
    carol = cost.estimate(base, "eu-central-1").by_component()["DeveloperInstance carol"]
    data = json.loads(diff(project, "--cost", "--json").stdout)["cost"]["byComponent"]
    assert data["DeveloperInstance bob"]["delta"] == pytest.approx(bob, abs=0.03)
    home = 100 * p["gp3_gb_month"]  # retained when carol leaves: still billed, under her name
    assert data["DeveloperInstance carol"] == {"base": carol, "head": round(home, 2), "delta": round(round(home, 2) - carol, 2)}
    assert carol == pytest.approx(office * p["instance_hour"]["t3.large"] + 100 * p["gp3_gb_month"] + 30 * p["gp3_gb_month"]
                                  + 730 * p["public_ipv4_hour"], abs=0.03)
    assert f"#### DeveloperInstance bob: 1 to change, 3 to add, −{abs(data['DeveloperInstance bob']['delta']):.2f} USD a month" in headers


def test_progress_goes_to_stderr_and_an_empty_roster_warns(tmp_path):
    text = (STACKS / "Pulumi.dev.yaml").read_text()
    write_stack(tmp_path, "dev", text[: text.index("  devprod:developers:")] + "  devprod:developers: []\n")
    result = runner.invoke(app, ["plan", "dev", "--project-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == "planning dev: no developers, production or pipeline"
    assert result.stderr.splitlines()[1].startswith("planned dev: 0 resources in ")
    (warning,) = [l for l in result.stderr.splitlines() if l.startswith("warning:")]
    assert "Pulumi.dev.yaml: devprod:developers is empty: no developer boxes are planned" in warning
    assert "planning" not in result.stdout


def test_prod_outputs_read_as_lines_within_80_columns(stack_project):
    result = runner.invoke(app, ["plan", "prod", "--project-dir", str(stack_project)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [l for l in lines if len(l) > 80] == []
    assert "{'" not in result.stdout and "['" not in result.stdout  # no Python reprs
    assert "    healthUrl: http://computed-eip-production-eip:8000/health" in lines
    assert "  production:" in lines and "    upRoleArns:" in lines
    assert any(l.startswith("    deployRoleArn: arn:aws:iam::") for l in lines)


def test_a_saved_base_identical_stack_file_is_not_planned_again(project, monkeypatch):
    """At a git ref whose program is this one, the base is this program with the base's stack
    file, planned in this process; an unchanged stack file is not planned a second time."""
    import devprod.plan
    from devprod.diff import plan_stack_text_at

    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "Pulumi.dev.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    head = json.loads((project / "base.json").read_text())
    calls = []
    real = devprod.plan.plan_stack
    monkeypatch.setattr(devprod.plan, "plan_stack", lambda *a, **k: calls.append(k) or real(*a, **k))
    assert plan_stack_text_at(project, "HEAD", "dev", head) is head and calls == []
    edit(project, "instanceType: t3.xlarge", "instanceType: t3.2xlarge")
    base = plan_stack_text_at(project, "HEAD", "dev", head)
    assert len(calls) == 1 and "instanceType: t3.xlarge" in calls[0]["stack_text"]
    assert next(r for r in base["resources"] if r["name"] == "bob-box")["inputs"]["instanceType"] == "t3.xlarge"


def test_an_offline_plan_skips_the_sdks_stack_trace_capture_and_puts_it_back(monkeypatch):
    """The engine's source positions cost about 1 ms a resource and nobody reads them offline;
    anything outside the offline run (`pulumi up`) still captures them."""
    import pulumi
    import pulumi.runtime.resource as sdk

    from devprod.plan import record

    calls = []
    original = sdk._get_stack_trace

    def counting():
        calls.append(1)
        return original()

    monkeypatch.setattr(sdk, "_get_stack_trace", counting)

    class Plain(pulumi.CustomResource):
        def __init__(self, name):
            super().__init__("test:index:Plain", name, {"value": name})

    plan = record(lambda: [Plain(f"r{i}") for i in range(3)], project="devprod", stack="test")
    assert len(plan.resources) == 3 and calls == []
    assert sdk._get_stack_trace is counting


def test_an_os_change_is_shown_as_ignored_by_the_running_box_never_as_no_changes(project):
    """The box ignores ami and userData (R1): a new image or first-boot script must still show, with what to do."""
    edit(project, "    - name: alice\n", "    - name: alice\n      os: ubuntu-24.04\n")
    result = diff(project, "--fail-on-replace")
    assert result.exit_code == 0, result.output  # nothing is replaced by `pulumi up`
    text = unwrapped(result.stdout)
    assert "No changes." not in text
    assert "**0 to add, 0 to change in place, 0 to replace, 0 to remove**\n**1 ignored by the running box: replace to apply**" in text
    assert ("> **Ignored by the running box: replace to apply**: `alice-box` (Instance): ami, userData changed; "
            "`pulumi up` leaves the box as it is (ignoreChanges).") in text
    (row,) = [l for l in text.splitlines() if l.startswith("- `!`")]
    assert row.startswith("- `!` `alice-box` Instance: ignored by the running box: replace to apply (ami ")
    assert "ubuntu" in row and row.endswith("; userData)")
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    (change,) = json.loads(diff(project, "--json").stdout)["changes"]
    assert change["kind"] == "ignored" and change["ignored"] == ["ami", "userData"] and change["name"] == "alice-box"


def test_a_graviton_type_changes_the_box_in_place_and_says_the_image_is_ignored(project):
    edit(project, "instanceType: t3.xlarge", "instanceType: t4g.xlarge")
    (change,) = json.loads(diff(project, "--json").stdout)["changes"]
    assert (change["name"], change["kind"], change["properties"], change["ignored"]) == (
        "bob-box", "update", ["instanceType"], ["ami"])
    row = next(l for l in unwrapped(diff(project).stdout).splitlines() if l.startswith("- `~` `bob-box`"))
    assert row.endswith("; ignored by the running box: replace to apply: ami")


def test_a_key_rotation_is_not_called_ignored(project):
    """The key reaches the running box through its association, so its copy in user data needs no replacement."""
    edit(project, "vP alice@laptop", "vP alice@new-laptop")
    result = diff(project, "--json")
    assert [(c["name"], c["kind"]) for c in json.loads(result.stdout)["changes"]] == [("alice-box-setup", "update")]


def test_a_base_from_before_images_were_told_apart_does_not_flag_every_box():
    base = {"resources": [{"urn": "u", "name": "b", "type": "aws:ec2/instance:Instance",
                           "inputs": {"ami": "ami-computed-from-ssm-parameter"}, "options": {"ignoreChanges": ["ami"]}}]}
    head = json.loads(json.dumps(base))
    head["resources"][0]["inputs"]["ami"] = "ami-computed-from-ssm:/aws/service/x"
    assert compare(base, head).changes == []


def test_plan_diagram_prints_the_stacks_flowchart(project):
    result = runner.invoke(app, ["plan", "dev", "--diagram", "--project-dir", str(project)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("flowchart ") and "alice" in result.stdout
    refused = runner.invoke(app, ["plan", "dev", "--diagram", "--json", "--project-dir", str(project)])
    assert refused.exit_code == 2 and "--diagram" in refused.stderr


def test_diff_diagram_marks_what_the_change_touches(project):
    assert runner.invoke(app, ["onboard", "dave", "--ssh-key", "-", "--project-dir", str(project)], input=DAVE).exit_code == 0
    result = diff(project, "--diagram")
    assert result.exit_code == 0, result.output
    markdown, picture = result.stdout.split("```mermaid", 1)
    assert "DeveloperInstance dave" in markdown and picture.rstrip().endswith("```")
    (dave,) = [line for line in picture.splitlines() if "dave" in line and "class " in line]
    assert "added" in dave


def test_offboarding_a_protected_home_says_how_to_unprotect_it(project):
    text = (project / "Pulumi.dev.yaml").read_text()
    assert "      homeVolumeGiB: 100\n" in text  # carol's entry in the suite's stack
    (project / "Pulumi.dev.yaml").write_text(text.replace("      homeVolumeGiB: 100\n", "      homeVolumeGiB: 100\n      protectHome: true\n"))
    base = runner.invoke(app, ["plan", "dev", "--json", "--project-dir", str(project)])
    assert base.exit_code == 0, base.output
    (project / "base.json").write_text(base.stdout)
    assert runner.invoke(app, ["offboard", "carol", "--project-dir", str(project)]).exit_code == 0
    result = diff(project, "--fail-on-replace")
    assert result.exit_code == 0, result.output
    assert "pulumi state unprotect" in unwrapped(result.stdout) and "carol-home" in unwrapped(result.stdout)
