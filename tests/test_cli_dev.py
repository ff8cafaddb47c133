"""`devprod plan`, `onboard` and `offboard` through typer's runner, on copies of the stack file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devprod.cli import app
from tests.conftest import ROOT, STACKS, write_stack

runner = CliRunner()
DAVE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMF6oIOB13KcUJRUajc0dZQKQN+1SvR1BVAl/kIXA6vP dave@laptop"


@pytest.fixture
def project(tmp_path) -> Path:
    write_stack(tmp_path, "dev", (STACKS / "Pulumi.dev.yaml").read_text())
    return tmp_path


def run(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def plan_json(project: Path) -> dict:
    result = run("plan", "dev", "--json", "--project-dir", str(project))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_plan_json_contract(project):
    data = plan_json(project)
    assert data["stack"] == "dev" and "placeholders" in data
    boxes = [r for r in data["resources"] if r["type"] == "aws:ec2/instance:Instance"]
    assert len(boxes) == 3
    for resource in data["resources"]:
        assert set(resource) == {"urn", "type", "name", "parent", "inputs", "options"}
        assert set(resource["options"]) == {"protect", "ignoreChanges", "retainOnDelete", "deleteBeforeReplace"}
    for box in boxes:
        assert box["inputs"]["metadataOptions"]["httpTokens"] == "required"
        assert box["inputs"]["rootBlockDevice"]["encrypted"] is True
        assert {"ami", "userData"} <= set(box["options"]["ignoreChanges"])
    homes = [r for r in data["resources"] if r["type"] == "aws:ebs/volume:Volume"]
    assert all(h["options"]["retainOnDelete"] and h["inputs"]["encrypted"] for h in homes)
    stops = {r["name"] for r in data["resources"] if r["type"] == "aws:scheduler/schedule:Schedule"}
    assert stops == {"alice-stop", "carol-stop"}  # bob is always-on
    for name in ("alice", "bob", "carol"):
        assert data["outputs"]["developers"][name]["sshConfig"].startswith(f"Host {name}-dev\n")


def test_plan_human_view_groups_by_component(project):
    result = run("plan", "dev", "--project-dir", str(project))
    assert result.exit_code == 0, result.output
    assert "DeveloperInstance alice" in result.stdout
    assert "Volume alice-home" in result.stdout and "[retainOnDelete]" in result.stdout
    assert "Host carol-dev" in result.stdout


def test_secrets_are_shown_as_secret_in_inputs_and_outputs():
    import pulumi
    import pulumi_aws as aws

    from devprod.plan import SECRET, record

    def program():
        parameter = aws.ssm.Parameter("db-password", type="SecureString", value=pulumi.Output.secret("hunter2"))
        pulumi.export("password", parameter.value)
        pulumi.export("nested", {"plain": "visible", "hidden": pulumi.Output.secret("x")})

    plan = record(program, project="devprod", stack="test")
    assert plan.named("db-password").inputs["value"] == SECRET
    assert "hunter2" not in json.dumps(plan.to_json())
    assert plan.outputs["nested"] == {"plain": "visible", "hidden": SECRET}


def test_extra_tags_from_config_reach_every_resource(project):
    path = project / "Pulumi.dev.yaml"
    path.write_text(path.read_text() + "  devprod:tags:\n    team: platform\n")
    data = plan_json(project)
    box = next(r for r in data["resources"] if r["name"] == "alice-box")
    assert box["inputs"]["tags"]["team"] == "platform"


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("- name: bob", "- name: Bob", "developers[1].name (Bob): 'Bob' is not a valid name"),
        ("- name: bob", "- name: root", "developers[1].name (root): 'root' is a system account name"),
        ("ssh-ed25519 AAAAC3", "ssh-dss AAAAC3", "developers[0].sshPublicKey (alice): DSA keys are refused"),
        ("allowedSshCidrs: [203.0.113.0/24]", "allowedSshCidrs: [0.0.0.0/0]", "developers[2].allowedSshCidrs (carol): '0.0.0.0/0' is wider than /16"),
        ("allowedSshCidrs: [203.0.113.0/24]", "allowedSshCidrs: [203.0.113.7/24]", "developers[2].allowedSshCidrs (carol): '203.0.113.7/24' is not a CIDR"),
        ("instanceType: t3.xlarge", "instanceType: xlarge", "developers[1].instanceType (bob): 'xlarge' is not an EC2 instance type"),
        ("timezone: Europe/Berlin", "timezone: Europe/Atlantis", "devDefaults.schedule.timezone: 'Europe/Atlantis' is not an IANA time zone"),
        ("    - name: carol", "    - name: alice", "developers[2].name (alice): duplicate of developers[0]"),
        ("      instanceType: t3.xlarge", "      instanceTipe: t3.xlarge", "developers[1].instanceTipe (bob): unknown key"),
    ],
)
def test_bad_config_exits_2_with_one_line_naming_the_developer(project, old, new, expected):
    path = project / "Pulumi.dev.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    result = run("plan", "dev", "--project-dir", str(project))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [l.strip() for l in result.stderr.splitlines()[1:]]
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr


def test_two_line_key_and_rsa_1024_are_refused_by_onboard(project, tmp_path):
    key = tmp_path / "two.pub"
    key.write_text(DAVE_KEY + "\n" + DAVE_KEY + "\n")
    result = run("onboard", "dave", "--ssh-key", str(key), "--project-dir", str(project))
    assert result.exit_code == 2 and "single line" in result.stderr
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(tmp_path / "weak")], check=True)
    result = run("onboard", "dave", "--ssh-key", str(tmp_path / "weak.pub"), "--project-dir", str(project))
    assert result.exit_code == 2 and "RSA key is 1024 bits; at least 3072 required" in result.stderr


def test_onboard_keeps_comments_then_plan_shows_only_additions(project):
    before = plan_json(project)
    original = (project / "Pulumi.dev.yaml").read_text()
    result = run("onboard", "dave", "--ssh-key", "-", "--instance-type", "t3.medium", "--project-dir", str(project), input=DAVE_KEY + "\n")
    assert result.exit_code == 0, result.output
    assert "pulumi up --stack dev" in result.stdout
    # Prose is filled for a pipe, at spaces only: no word of it is cut.
    assert max(map(len, result.stdout.splitlines())) <= 80, result.stdout
    assert "`pulumi stack output developers --stack dev`" in result.stdout.replace("\n", " ")
    text = (project / "Pulumi.dev.yaml").read_text()
    # Every line of the file (comments included) stays as it was; the entry is appended.
    assert text == original + f"    - name: dave\n      sshPublicKey: {DAVE_KEY}\n      instanceType: t3.medium\n"
    after = plan_json(project)
    old = {r["urn"]: r for r in before["resources"]}
    new = {r["urn"]: r for r in after["resources"]}
    assert set(old) <= set(new), "onboarding removed a resource"
    changed = [u for u in old if old[u]["inputs"] != new[u]["inputs"] or old[u]["options"] != new[u]["options"]]
    assert changed == [], f"onboarding changed existing resources: {changed}"
    added = sorted(new[u]["name"] for u in set(new) - set(old))
    assert "dave-box" in added and "dave-home" in added
    assert all(name == "dave" or name.startswith("dave-") for name in added)


def test_onboard_refuses_duplicates_and_dry_run_writes_nothing(project):
    original = (project / "Pulumi.dev.yaml").read_text()
    result = run("onboard", "Alice", "--ssh-key", "-", "--project-dir", str(project), input=DAVE_KEY)
    assert result.exit_code == 2 and "'Alice' is already in Pulumi.dev.yaml" in result.stderr
    result = run("onboard", "dave", "--ssh-key", "-", "--dry-run", "--project-dir", str(project), input=DAVE_KEY)
    assert result.exit_code == 0 and "+    - name: dave" in result.stdout
    assert (project / "Pulumi.dev.yaml").read_text() == original


def test_onboard_validates_the_whole_entry(project):
    result = run("onboard", "dave", "--ssh-key", "-", "--access", "ssh", "--project-dir", str(project), input=DAVE_KEY)
    assert result.exit_code == 2
    assert "developers[3].allowedSshCidrs (dave): access 'ssh' needs" in result.stderr
    result = run("onboard", "dave", "--ssh-key", "-", "--access", "ssh", "--cidr", "198.51.100.0/24", "--project-dir", str(project), input=DAVE_KEY)
    assert result.exit_code == 0, result.output


def test_offboard_keeps_the_home_volume(project):
    before = plan_json(project)
    result = run("offboard", "carol", "--project-dir", str(project))
    assert result.exit_code == 0, result.output
    assert "retained" in result.stdout
    after = plan_json(project)
    removed = {r["urn"]: r for r in before["resources"]} .keys() - {r["urn"] for r in after["resources"]}
    home = next(r for r in before["resources"] if r["name"] == "carol-home")
    assert home["urn"] in removed and home["options"]["retainOnDelete"] is True
    assert all("carol" in urn for urn in removed)
    result = run("offboard", "carol", "--project-dir", str(project))
    assert result.exit_code == 2 and "'carol' is not in Pulumi.dev.yaml" in result.stderr


def test_missing_stack_file_is_exit_2(project):
    result = run("plan", "staging", "--project-dir", str(project))
    assert result.exit_code == 2 and "Pulumi.staging.yaml not found" in result.stderr


def test_a_bug_is_reported_as_a_bug_not_as_bad_input(monkeypatch, stack_project):
    """An unexpected exception: one line saying it is a bug, exit 70, no traceback."""
    import devprod.plan

    def broken(*args, **kwargs):
        raise KeyError("something the code did not expect")

    monkeypatch.setattr(devprod.plan, "plan_stack", broken)
    result = CliRunner().invoke(app, ["plan", "dev", "--project-dir", str(stack_project)])
    assert result.exit_code == 70, result.output
    assert "internal error (KeyError" in result.stderr and "this is a bug in devprod" in result.stderr
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--fail-on-replace"], "--fail-on-replace needs --diff BASE"),
        (["--live-prices"], "--live-prices needs --cost"),
    ],
)
def test_flags_that_need_another_flag_are_refused(stack_project, flags, message):
    result = CliRunner().invoke(app, ["plan", "dev", "--project-dir", str(stack_project), *flags])
    assert result.exit_code == 2 and message in result.stderr, result.output


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (("availabilityZones: [eu-central-1a, eu-central-1b]", "availabilityZones: [eu-central-1a, eu-central-1b"),
         "expected ',' or ']'"),
        (("    instanceType: t3.large", "\tinstanceType: t3.large"), "found character '\\t' that cannot start any token"),
        (("  - name: bob", "  - name: bob: x"), "mapping values are not allowed here"),
        (("    os: al2023 ", "    os: al2023\n    os: ubuntu-24.04 "), 'found duplicate key "os"'),
    ],
)
@pytest.mark.parametrize("command", [["plan", "dev"], ["onboard", "zed", "--ssh-key", "-"], ["offboard", "bob"]])
def test_a_yaml_syntax_error_is_one_line_naming_file_line_and_column(tmp_path, breakage, expected, command):
    text = (STACKS / "Pulumi.dev.yaml").read_text()
    assert breakage[0] in text
    write_stack(tmp_path, "dev", text.replace(breakage[0], breakage[1], 1))
    result = CliRunner().invoke(app, [*command, "--project-dir", str(tmp_path)], input=DAVE_KEY)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: Pulumi.dev.yaml:") and expected in line, line
    assert line.split(":")[2].isdigit() and line.split(":")[3].isdigit()


def test_onboard_refuses_flags_that_mean_nothing_and_the_production_stack(stack_project, tmp_path):
    result = CliRunner().invoke(app, ["onboard", "zed", "--ssh-key", "-", "--cidr", "203.0.113.0/24",
                                      "--project-dir", str(stack_project)], input=DAVE_KEY)
    assert result.exit_code == 2 and "--cidr 203.0.113.0/24 needs --access ssh" in result.stderr
    write_stack(tmp_path, "prod", (STACKS / "Pulumi.prod.yaml").read_text())
    before = (tmp_path / "Pulumi.prod.yaml").read_text()
    result = CliRunner().invoke(app, ["onboard", "zed", "--ssh-key", "-", "--stack", "prod",
                                      "--project-dir", str(tmp_path)], input=DAVE_KEY)
    assert result.exit_code == 2 and "holds devprod:production and no roster" in result.stderr, result.output
    assert (tmp_path / "Pulumi.prod.yaml").read_text() == before


# ------------------------------------------------------------------ help and output shape


def _commands():
    import typer.main

    group = typer.main.get_command(app)
    return [(name, group.get_command(None, name)) for name in group.list_commands(None)]


@pytest.mark.parametrize("name, command", _commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_and_argument_has_help_and_a_plain_metavar(name, command):
    import re

    params = [p for p in command.params if p.name != "help"]
    for param in params:
        assert (param.help or "").strip(), f"{name} {param.opts}: no help text"
        if not getattr(param, "is_flag", False):
            assert re.fullmatch(r"[A-Z][A-Z_]*", param.metavar or ""), f"{name} {param.opts}: metavar {param.metavar!r}"
    result = runner.invoke(app, [name, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert not re.search(r"<\w+(\[\w+\])?>|\{\w+\}", text), text  # typer's <str>, <list[str]>, {name}
    assert all(len(line) <= 80 for line in text.splitlines()), text
    usage = text.splitlines()[0]
    for param in (p for p in params if p.param_type_name == "argument"):
        assert (param.metavar if param.required else f"[{param.metavar}]") in usage.split(), usage


def test_progress_is_a_live_table_on_a_terminal_and_one_line_per_change_in_a_pipe():
    import io
    import re

    from rich.console import Console

    from devprod.render import aligned, heading, progress

    screen = io.StringIO()
    with progress(Console(file=screen, force_terminal=True, width=80, color_system=None), "deploy document") as report:
        report({"i-0123456789abcdef0": "InProgress", "i-1": "x" * 120})
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # cursor moves of the live view
    assert "i-0123456789abcdef0" in drawn and "x" * 40 in drawn  # folded, not cut off
    assert all(len(line) <= 80 for line in drawn.replace("\r", "\n").splitlines()), drawn
    pipe = io.StringIO()
    console = Console(file=pipe, force_terminal=False, width=80)
    with progress(console, "deploy document") as report:
        for status in ("Pending", "InProgress", "InProgress", "Success"):
            report({"i-1": status})
    heading(console, "i-1: Success")
    lines = pipe.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines[:-1]] == ["i-1: Pending", "i-1: InProgress", "i-1: Success"]
    assert lines[-1] == "==> i-1: Success <=="
    assert aligned(("instance", "status"), [("i-0123456789abcdef0", "InProgress"), ("i-1", None)]) == [
        "instance             status", "i-0123456789abcdef0  InProgress", "i-1"]


def test_status_lines_fit_80_columns():
    from devprod.cli import production_line, status_lines
    from devprod.ops import Execution, Health

    rows = [Execution("22222222-2222-2222-2222-222222222222", "InProgress", "0123456789abcdef", "Webhook",
                      "2026-11-28T04:22:13.5+01:00", None, 192.0, {"Source": "Succeeded", "Test": "InProgress"})]
    lines = status_lines(rows)
    assert lines[1] == "22222222-2222-2222-2222-222222222222  InProgress  01234567  11-28 03:22  3m12s"
    assert lines[2] == "    Source Succeeded, Test InProgress (by Webhook)"
    assert all(len(line) <= 80 for line in lines)
    live = Health("http://h/health", True, 200, 3.0, "cafe123", 1, slot="blue")
    assert production_line(live, "health") == "production: healthy, serving release cafe123 in slot blue (from /health)"


# ------------------------------------------------------------------ roster edits keep the file's own text


BLOCK_STYLE = """\
config:
  aws:region: eu-central-1
  devprod:devDefaults:
    schedule:
      stopAt: '20:00'
      startAt: ~
      days:
      - mon
      - fri
      timezone: Europe/Berlin
  devprod:developers:
  - name: alice
    sshPublicKey: {key}
    # carol's entry follows
  - name: carol
    sshPublicKey: {key}
    access: ssh
    allowedSshCidrs:
    - 203.0.113.0/24
encryptionsalt: v1:abc
"""


def _onboard(project, *flags):
    return run("onboard", "dave", "--ssh-key", "-", *flags, "--project-dir", str(project), input=DAVE_KEY)


def test_onboard_writes_cidrs_in_the_files_flow_style_and_keeps_every_other_byte(project):
    path = project / "Pulumi.dev.yaml"
    original = path.read_text().replace("startAt: null", "startAt: ~").replace("[mon, tue, wed, thu, fri]", "[mon,tue,wed,thu,fri]")
    path.write_text(original)
    result = _onboard(project, "--access", "ssh", "--cidr", "198.51.100.0/24", "--cidr", "198.51.101.0/24")
    assert result.exit_code == 0, result.output
    assert path.read_text() == original + (
        f"    - name: dave\n      sshPublicKey: {DAVE_KEY}\n      access: ssh\n"
        "      allowedSshCidrs: [198.51.100.0/24, 198.51.101.0/24]\n")
    result = run("offboard", "dave", "--project-dir", str(project))
    assert result.exit_code == 0, result.output
    assert path.read_text() == original


def test_onboard_and_offboard_follow_a_block_style_file(tmp_path):
    original = BLOCK_STYLE.format(key=DAVE_KEY.replace("dave@", "x@"))
    path = write_stack(tmp_path, "dev", original)
    result = _onboard(tmp_path, "--access", "ssh", "--cidr", "198.51.100.0/24")
    assert result.exit_code == 0, result.output
    added = f"  - name: dave\n    sshPublicKey: {DAVE_KEY}\n    access: ssh\n    allowedSshCidrs:\n    - 198.51.100.0/24\n"
    assert path.read_text() == original.replace("encryptionsalt:", added + "encryptionsalt:")
    result = run("offboard", "carol", "--project-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    text = path.read_text()
    assert "carol" not in text.replace("# carol's entry follows", "") and "# carol's entry follows" in text
    assert text.splitlines()[:13] == original.splitlines()[:13]


def test_offboarding_the_last_developer_leaves_an_empty_list_then_onboarding_refills_it(tmp_path):
    text = BLOCK_STYLE.format(key=DAVE_KEY)
    text = text[:text.index("    # carol")] + text[text.index("encryptionsalt:"):]
    path = write_stack(tmp_path, "dev", text.replace("  - name: alice", "  - name: zed", 1))
    result = run("offboard", "zed", "--project-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "  devprod:developers: []\nencryptionsalt: v1:abc\n" in path.read_text()
    assert _onboard(tmp_path).exit_code == 0
    assert f"  devprod:developers:\n    - name: dave\n      sshPublicKey: {DAVE_KEY}\nencryptionsalt:" in path.read_text()


@pytest.mark.parametrize(
    "text, flags, message",
    [
        ("config:\n  devprod:developers: alice\n", [], "Pulumi.dev.yaml: devprod:developers must be a list of developers, got 'alice'"),
        ("config: [a, b]\n", [], "Pulumi.dev.yaml: config must be a mapping"),
        ("just text\n", [], "Pulumi.dev.yaml: the top level must be a mapping"),
        ("config:\n  aws:region: eu-central-1\n  devprod:developers:\n    - alice\n", [], "Pulumi.dev.yaml would not validate: developers[0]"),
        (None, ["--cidr", "198.51.100.0/24"], "--cidr 198.51.100.0/24 needs --access ssh; --access (devDefaults.access in Pulumi.dev.yaml) is 'ssm'"),
        (None, ["--access", "ssm", "--cidr", "198.51.100.0/24"], "--cidr 198.51.100.0/24 needs --access ssh; --access is 'ssm'"),
        (None, ["--instance-type", "xlarge"], "Pulumi.dev.yaml would not validate: developers[3].instanceType (dave): 'xlarge' is not an EC2 instance type"),
        (None, ["--ssh-key", "/etc"], "--ssh-key /etc: no such file"),
    ],
)
def test_every_onboard_error_is_one_line_naming_the_file_or_flag(project, text, flags, message):
    path = project / "Pulumi.dev.yaml"
    if text is not None:
        path.write_text(text)
    before = path.read_text()
    args = ["onboard", "dave", *(["--ssh-key", "-"] if "--ssh-key" not in flags else []), *flags, "--project-dir", str(project)]
    result = run(*args, input=DAVE_KEY)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert message in line, line
    assert path.read_text() == before


def test_offboard_errors_name_the_file_and_a_failed_write_is_one_line(project):
    path = project / "Pulumi.dev.yaml"
    before = path.read_text()
    (project / "Pulumi.dev.yaml.tmp").mkdir()  # where the edit is written before the rename
    result = run("offboard", "bob", "--project-dir", str(project))
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [f"error: cannot write Pulumi.dev.yaml in {project}: Is a directory"]
    assert path.read_text() == before
    result = run("onboard", "dave", "--ssh-key", "-", "--project-dir", str(project), input="")
    assert result.exit_code == 2 and "--ssh-key -: standard input is empty" in result.stderr
    path.write_text("config:\n  devprod:developers:\n    - alice\n")
    result = run("offboard", "bob", "--project-dir", str(project))
    assert result.exit_code == 2 and "'bob' is not in Pulumi.dev.yaml (developers: 'alice')" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["status", "--limit", "99"], "Invalid value for '--limit'"),
        (["deploy"], "Missing option '--release'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["health", "--bogus"], "No such option: --bogus"),
        (["--bogus"], "No such option: --bogus"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line and "--help)" in line, line
