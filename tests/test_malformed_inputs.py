"""Malformed input across the whole CLI: a table of cases, each run through the real command.

For every case: the exit code is the documented one (devprod/errors.py, the
`--help` epilog), no traceback appears anywhere, and stderr carries exactly one
error line, which names the file, key or flag at fault. Each case gets its own
project folder (the suite's stack files from tests/stacks, possibly broken on
purpose) and an environment with no AWS credentials, region or profile.

Most cases run in-process through typer's CliRunner (seconds for the whole
table); a few run as real subprocesses, to prove that nothing reaches a real
terminal as a traceback either.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devprod.cli import app
from devprod.errors import EXIT_AWS, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from tests.conftest import ROOT, STACKS, write_stack

DEV = (STACKS / "Pulumi.dev.yaml").read_text()
PROD = (STACKS / "Pulumi.prod.yaml").read_text()
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINlPH3Fm2hlkV6Sk8Sa4Xu7IKaY2I1L1Ym89n0QMHYSi zed@test\n"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n-----END OPENSSH PRIVATE KEY-----\n"
SHA = "0123456789abcdef0123456789abcdef01234567"
# Names a deploy needs, given as flags, so that only the input under test is wrong.
DEPLOY_NAMES = ["--document", "devprod-deploy", "--artifact-bucket", "example-releases", "--region", "eu-central-1"]
ONBOARD = ["onboard", "zed", "--ssh-key", "{dir}/zed.pub", "--project-dir", "{dir}"]


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    exit: int
    names: str  # what the error line must name: a file:line, a key path, a flag, a bad value
    dev: tuple[tuple[str, str], ...] = ()  # (old, new) edits of the dev stack file
    prod: tuple[tuple[str, str], ...] = ()
    files: dict[str, str] = field(default_factory=dict)  # extra files in the project folder
    stdin: str | None = None


def dev(old: str, new: str) -> tuple[tuple[str, str], ...]:
    return ((old, new),)


CASES = [
    # --- YAML syntax errors in a stack file: exit 2, `Pulumi.dev.yaml:LINE:COL: problem`
    Case("yaml-unclosed-bracket", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "Pulumi.dev.yaml:",
         dev=dev("availabilityZones: [eu-central-1a, eu-central-1b]", "availabilityZones: [eu-central-1a, eu-central-1b")),
    Case("yaml-tab-indent", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "Pulumi.dev.yaml:",
         dev=dev("    instanceType: t3.large", "\tinstanceType: t3.large")),
    Case("yaml-colon-in-value", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "Pulumi.dev.yaml:",
         dev=dev("    - name: bob\n", "    - name: bob: x\n")),
    Case("yaml-duplicate-key", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "Pulumi.dev.yaml:",
         dev=dev("    homeVolumeGiB: 50\n", "    homeVolumeGiB: 50\n    homeVolumeGiB: 60\n")),
    Case("yaml-onboard-unclosed-bracket", ONBOARD, EXIT_BAD_INPUT, "Pulumi.dev.yaml:",
         dev=dev("days: [mon, tue, wed, thu, fri]", "days: [mon, tue, wed, thu, fri"), files={"zed.pub": KEY}),
    Case("yaml-offboard-tab", ["offboard", "alice", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "Pulumi.dev.yaml:",
         dev=dev("    idleStopMinutes: 60", "\tidleStopMinutes: 60")),
    Case("yaml-prod-duplicate-key", ["plan", "prod", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "Pulumi.prod.yaml:",
         prod=(("    port: 8000\n", "    port: 8000\n    port: 8001\n"),)),
    Case("yaml-not-a-mapping", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "Pulumi.dev.yaml",
         dev=dev(DEV, "- just\n- a list\n")),
    # --- config values: exit 2, the key path and the bad value
    Case("config-home-gib-string", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "homeVolumeGiB",
         dev=dev("    homeVolumeGiB: 50", '    homeVolumeGiB: "100"')),
    Case("config-protect-home-string", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "protectHome",
         dev=dev("    idleStopMinutes: 60", '    idleStopMinutes: 60\n    protectHome: "yes"')),
    Case("config-no-such-instance-size", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "t3.24xlarge",
         dev=dev("instanceType: t3.large", "instanceType: t3.24xlarge")),
    Case("config-reserved-developer-name", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "root",
         dev=dev("- name: alice", "- name: root")),
    Case("config-duplicate-developer", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "alice",
         dev=dev("- name: bob", "- name: alice")),
    Case("config-garbage-ssh-key", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "sshPublicKey",
         dev=dev("sshPublicKey: ssh-ed25519 AAAAC3", "sshPublicKey: ssh-ed25519 !!!!")),
    Case("config-ssh-from-anywhere", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "allowedSshCidrs",
         dev=dev("allowedSshCidrs: [203.0.113.0/24]", "allowedSshCidrs: [0.0.0.0/0]")),
    Case("config-cidr-host-bits", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "10.40.0.1/16",
         dev=dev("cidr: 10.40.0.0/16", "cidr: 10.40.0.1/16")),
    Case("config-unknown-key", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "instanceTyp",
         dev=dev("    instanceType: t3.large", "    instanceType: t3.large\n    instanceTyp: t3.large")),
    Case("config-stop-at-25h", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "stopAt",
         dev=dev('stopAt: "20:00"', 'stopAt: "25:00"')),
    Case("config-unknown-timezone", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "Mars/Olympus",
         dev=dev("timezone: Europe/Berlin", "timezone: Mars/Olympus")),
    Case("config-region-typo", ["plan", "dev", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "aws:region",
         dev=dev("aws:region: eu-central-1", "aws:region: eu-centrl-1")),
    Case("config-prod-port-out-of-range", ["plan", "prod", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "port",
         prod=(("port: 8000", "port: 99999"),)),
    Case("config-prod-unknown-runtime", ["plan", "prod", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "runtime",
         prod=(("runtime: node20 ", "runtime: node99 "),)),
    Case("config-prod-bad-repository", ["plan", "prod", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "repository",
         prod=(("repository: example-org/app", "repository: not a repo"),)),
    # issue #15: production hosts and HTTPS
    Case("config-prod-hosts-without-domain", ["plan", "prod", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "hosts 3",
         prod=(("keepReleases: 5", "keepReleases: 5\n    hosts: 3"),)),
    Case("config-prod-hosts-out-of-range", ["plan", "prod", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "hosts",
         prod=(("keepReleases: 5", "keepReleases: 5\n    hosts: 11"),)),
    Case("config-prod-domain-without-certificate", ["plan", "prod", "--project-dir", "{dir}"], EXIT_BAD_INPUT,
         "hostedZoneId or certificateArn", prod=(("keepReleases: 5", "keepReleases: 5\n    domain: app.example.com"),)),
    Case("config-prod-bad-domain", ["plan", "prod", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "domain",
         prod=(("keepReleases: 5", "keepReleases: 5\n    domain: 'app example.com'\n    hostedZoneId: Z0123ABC"),)),
    Case("config-prod-bad-zone-id", ["plan", "prod", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "hostedZoneId",
         prod=(("keepReleases: 5", "keepReleases: 5\n    domain: app.example.com\n    hostedZoneId: zone-1"),)),
    Case("config-prod-certificate-other-region", ["plan", "prod", "--project-dir", "{dir}"], EXIT_BAD_INPUT,
         "certificateArn", prod=(("keepReleases: 5", "keepReleases: 5\n    domain: app.example.com\n    certificateArn: "
                                  "arn:aws:acm:us-east-1:123456789012:certificate/01234567-89ab-cdef-0123-456789abcdef"),)),
    Case("config-prod-balancer-one-zone", ["plan", "prod", "--project-dir", "{dir}"], EXIT_BAD_INPUT,
         "devprod:network.availabilityZones",
         prod=(("availabilityZones: [eu-central-1a, eu-central-1b]", "availabilityZones: [eu-central-1a]"),
               ("keepReleases: 5", "keepReleases: 5\n    domain: app.example.com\n    hostedZoneId: Z0123ABC"))),
    # --- flags and flag combinations
    Case("plan-fail-on-replace-without-diff", ["plan", "dev", "--fail-on-replace", "--project-dir", "{dir}"],
         EXIT_BAD_INPUT, "--fail-on-replace"),
    Case("plan-live-prices-without-cost", ["plan", "dev", "--live-prices", "--project-dir", "{dir}"],
         EXIT_BAD_INPUT, "--live-prices"),
    Case("plan-unknown-stack", ["plan", "staging", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "Pulumi.staging.yaml"),
    Case("plan-unknown-flag", ["plan", "dev", "--bogus"], EXIT_BAD_INPUT, "--bogus"),
    Case("plan-project-dir-without-pulumi-yaml", ["plan", "dev", "--project-dir", "{dir}/../elsewhere"],
         EXIT_BAD_INPUT, "Pulumi.yaml", files={"../elsewhere/.keep": ""}),
    Case("unknown-command", ["frobnicate"], EXIT_BAD_INPUT, "frobnicate"),
    # --- plan --diff bases
    Case("diff-base-not-json", ["plan", "dev", "--diff", "{dir}/base.json", "--project-dir", "{dir}"],
         EXIT_BAD_INPUT, "--diff", files={"base.json": "this is not json\n"}),
    Case("diff-base-json-not-a-plan", ["plan", "dev", "--diff", "{dir}/base.json", "--project-dir", "{dir}"],
         EXIT_BAD_INPUT, "--diff", files={"base.json": json.dumps({"hello": "world"})}),
    Case("diff-base-other-stacks-plan", ["plan", "dev", "--diff", "{dir}/base.json", "--project-dir", "{dir}"],
         EXIT_BAD_INPUT, "prod", files={"base.json": json.dumps(
             {"stack": "prod", "project": "devprod", "resources": [], "outputs": {}})}),
    Case("diff-base-missing-file", ["plan", "dev", "--diff", "{dir}/nope.json", "--project-dir", "{dir}"],
         EXIT_BAD_INPUT, "nope.json"),
    # --- onboard / offboard
    Case("onboard-bad-name", ["onboard", "Bad_Name", "--ssh-key", "{dir}/zed.pub", "--project-dir", "{dir}"],
         EXIT_BAD_INPUT, "Bad_Name", files={"zed.pub": KEY}),
    Case("onboard-reserved-name", ["onboard", "root", "--ssh-key", "{dir}/zed.pub", "--project-dir", "{dir}"],
         EXIT_BAD_INPUT, "root", files={"zed.pub": KEY}),
    Case("onboard-existing-name", ["onboard", "alice", "--ssh-key", "{dir}/zed.pub", "--project-dir", "{dir}"],
         EXIT_BAD_INPUT, "alice", files={"zed.pub": KEY}),
    Case("onboard-key-file-missing", ["onboard", "zed", "--ssh-key", "{dir}/nope.pub", "--project-dir", "{dir}"],
         EXIT_BAD_INPUT, "--ssh-key"),
    Case("onboard-private-key", ONBOARD, EXIT_BAD_INPUT, "sshPublicKey", files={"zed.pub": PRIVATE_KEY}),
    Case("onboard-empty-stdin-key", ["onboard", "zed", "--ssh-key", "-", "--project-dir", "{dir}"],
         EXIT_BAD_INPUT, "--ssh-key", stdin=""),
    Case("onboard-cidr-without-ssh-access", [*ONBOARD, "--cidr", "198.51.100.0/24"], EXIT_BAD_INPUT, "--cidr",
         files={"zed.pub": KEY}),
    Case("onboard-ssh-from-anywhere", [*ONBOARD, "--access", "ssh", "--cidr", "0.0.0.0/0"], EXIT_BAD_INPUT,
         "0.0.0.0/0", files={"zed.pub": KEY}),
    Case("onboard-unknown-access", [*ONBOARD, "--access", "telnet"], EXIT_BAD_INPUT, "telnet", files={"zed.pub": KEY}),
    Case("onboard-unknown-os", [*ONBOARD, "--os", "windows"], EXIT_BAD_INPUT, "windows", files={"zed.pub": KEY}),
    Case("onboard-home-gib-not-a-number", [*ONBOARD, "--home-gib", "lots"], EXIT_BAD_INPUT, "--home-gib",
         files={"zed.pub": KEY}),
    Case("onboard-home-gib-zero", [*ONBOARD, "--home-gib", "0"], EXIT_BAD_INPUT, "homeVolumeGiB",
         files={"zed.pub": KEY}),
    Case("onboard-no-such-instance-size", [*ONBOARD, "--instance-type", "t3.24xlarge"], EXIT_BAD_INPUT,
         "t3.24xlarge", files={"zed.pub": KEY}),
    Case("onboard-into-prod-stack", [*ONBOARD, "--stack", "prod"], EXIT_BAD_INPUT, "--stack", files={"zed.pub": KEY}),
    Case("offboard-unknown-developer", ["offboard", "zed", "--project-dir", "{dir}"], EXIT_BAD_INPUT, "zed"),
    # --- health
    Case("health-url-not-a-url", ["health", "--url", "not-a-url"], EXIT_BAD_INPUT, "--url"),
    Case("health-url-file-scheme", ["health", "--url", "file:///etc/passwd"], EXIT_BAD_INPUT, "--url"),
    Case("health-no-url", ["health"], EXIT_BAD_INPUT, "--url"),
    Case("health-zero-timeout", ["health", "--url", "http://127.0.0.1:9/health", "--timeout", "0"], EXIT_BAD_INPUT,
         "--timeout"),
    Case("health-zero-retries", ["health", "--url", "http://127.0.0.1:9/health", "--retries", "0"], EXIT_BAD_INPUT,
         "--retries"),
    # --- AWS settings: profile, region
    Case("status-unknown-profile", ["status", "--pipeline", "p", "--profile", "no-such-profile"], EXIT_BAD_INPUT,
         "--profile"),
    Case("status-no-region", ["status", "--pipeline", "p"], EXIT_BAD_INPUT, "--region"),
    Case("status-bad-region", ["status", "--pipeline", "p", "--region", "mars-north-1"], EXIT_BAD_INPUT, "mars-north-1"),
    Case("status-zero-limit", ["status", "--pipeline", "p", "--limit", "0"], EXIT_BAD_INPUT, "--limit"),
    Case("logs-zero-tail", ["logs", "--pipeline", "p", "--tail", "0"], EXIT_BAD_INPUT, "--tail"),
    Case("bootstrap-bad-bucket", ["bootstrap", "--region", "eu-central-1", "--bucket", "Bad_Bucket"], EXIT_BAD_INPUT,
         "--bucket"),
    Case("bootstrap-bad-region", ["bootstrap", "--region", "eu-centrl-1", "--bucket", "example-state"], EXIT_BAD_INPUT,
         "eu-centrl-1"),
    # --- deploy / rollback release forms: refused before any AWS call
    Case("deploy-release-not-hex", ["deploy", "--release", "not-a-sha", *DEPLOY_NAMES], EXIT_BAD_INPUT, "not-a-sha"),
    Case("deploy-release-41-hex", ["deploy", "--release", SHA + "0", *DEPLOY_NAMES], EXIT_BAD_INPUT, "--release"),
    Case("deploy-release-path", ["deploy", "--release", "../../etc/passwd", *DEPLOY_NAMES], EXIT_BAD_INPUT,
         "--release"),
    Case("deploy-release-empty", ["deploy", "--release", "", *DEPLOY_NAMES], EXIT_BAD_INPUT, "--release"),
    # A short sha is a prefix to resolve against the bucket: that needs AWS, and there are no credentials.
    Case("deploy-release-short-sha-no-credentials", ["deploy", "--yes", "--release", "abc1234", *DEPLOY_NAMES], EXIT_AWS,
         "credentials"),
    Case("deploy-without-release", ["deploy", *DEPLOY_NAMES], EXIT_BAD_INPUT, "--release"),
    Case("deploy-bad-region", ["deploy", "--yes", "--release", SHA, "--document", "d", "--artifact-bucket", "b",
                               "--region", "eu-centrl-1"], EXIT_BAD_INPUT, "eu-centrl-1"),
    Case("deploy-no-terminal-no-yes", ["deploy", "--release", SHA, *DEPLOY_NAMES], EXIT_BAD_INPUT, "--yes"),
    Case("rollback-to-not-a-sha", ["rollback", "--to", "HEAD~1", *DEPLOY_NAMES], EXIT_BAD_INPUT, "HEAD~1"),
    # --- ssh
    Case("ssh-unknown-developer", ["ssh", "zed", "--print"], EXIT_BAD_INPUT, "--instance-id"),
]

# The sane neighbour of a refused case: proof that the table's setup is not what fails.
CONTROLS = [
    Case("control-plan-dev", ["plan", "dev", "--project-dir", "{dir}"], EXIT_OK, ""),
    Case("control-onboard-dry-run", [*ONBOARD, "--dry-run"], EXIT_OK, "", files={"zed.pub": KEY}),
    # --print only prints: no Session Manager plugin is needed for that.
    Case("control-ssh-print-needs-no-plugin", ["ssh", "alice", "--print", "--instance-id", "i-0123456789abcdef0"],
         EXIT_OK, ""),
]

# Run again as real processes: a traceback would reach the terminal here if anywhere.
IN_SUBPROCESS = {"yaml-tab-indent", "health-url-file-scheme", "status-no-region", "status-unknown-profile",
                 "diff-base-not-json", "deploy-release-not-hex"}


def test_the_table_is_big_and_unambiguous():
    ids = [case.id for case in CASES + CONTROLS]
    assert len(set(ids)) == len(ids), "duplicate case ids"
    assert len(CASES) >= 40
    assert IN_SUBPROCESS <= set(ids)
    # Every edit must apply: a typo in `old` would silently test the unbroken file.
    for case in CASES:
        for old, _ in case.dev:
            assert old in DEV, (case.id, old)
        for old, _ in case.prod:
            assert old in PROD, (case.id, old)


def project_for(case: Case, tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    texts = {"dev": DEV, "prod": PROD}
    for stack, edits in (("dev", case.dev), ("prod", case.prod)):
        for old, new in edits:
            texts[stack] = texts[stack].replace(old, new, 1)
        write_stack(folder, stack, texts[stack])
    for name, text in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def clean_env(tmp_path: Path) -> dict[str, str | None]:
    """No AWS credentials, region, profile or endpoint; empty AWS config files; no devprod names."""
    (tmp_path / "aws-config").write_text("")
    (tmp_path / "aws-credentials").write_text("")
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith(("AWS_", "DEVPROD_"))}
    env.update({
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata probe for credentials or region
        "PULUMI_CONFIG_PASSPHRASE": None,
    })
    return env


def error_of(stderr: str) -> tuple[list[str], list[str]]:
    """The error lines of stderr, and the detail lines under an error that ends in a colon.

    One problem is one line: `error: ...` (or click's `Error: ...`), or a header
    naming the file (`Pulumi.dev.yaml is invalid:`) over one indented line per problem.
    """
    lines = stderr.splitlines()
    heads = [i for i, line in enumerate(lines) if re.match(r"(error:|Error:|\S+ is invalid:)", line)]
    details: list[str] = []
    if len(heads) == 1 and lines[heads[0]].rstrip().endswith(":"):
        for line in lines[heads[0] + 1:]:
            if not line.startswith(" "):
                break
            details.append(line)
    return [lines[i] for i in heads], details


def check(case: Case, code: int, stdout: str, stderr: str) -> None:
    shown = f"{case.id}: exit {code}\n--- stdout\n{stdout[-1500:]}\n--- stderr\n{stderr[-1500:]}"
    assert "Traceback" not in stdout + stderr, shown
    assert code == case.exit, shown
    if case.exit == EXIT_OK:
        return
    heads, details = error_of(stderr)
    assert len(heads) == 1, "want exactly one error\n" + shown
    assert len(details) <= 1, "one problem, so one line under the header\n" + shown
    lines = [line for line in stderr.splitlines() if line.strip()]
    # Said once: click's usage errors add their usage and help-hint lines, nothing more.
    assert len(lines) <= 3, "stderr runs long\n" + shown
    said = " ".join(heads + details)
    assert case.names in said, f"the error should name {case.names!r}\n" + shown


@pytest.mark.parametrize("case", CASES + CONTROLS, ids=lambda case: case.id)
def test_in_process(case: Case, tmp_path, monkeypatch):
    folder = project_for(case, tmp_path)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin")  # no pulumi, no session-manager-plugin
    argv = [arg.replace("{dir}", str(folder)) for arg in case.argv]
    result = CliRunner().invoke(app, argv, input=case.stdin, env=clean_env(tmp_path), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{case.id}: {type(result.exception).__name__} escaped the CLI: {result.exception}")
    check(case, result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize("case", [c for c in CASES if c.id in IN_SUBPROCESS], ids=lambda case: case.id)
def test_in_a_real_process(case: Case, tmp_path):
    folder = project_for(case, tmp_path)
    env = {k: v for k, v in os.environ.items() if v is not None}
    for name, value in clean_env(tmp_path).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env.update(PYTHONPATH=str(ROOT), PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin", COLUMNS="80")
    argv = [arg.replace("{dir}", str(folder)) for arg in case.argv]
    result = subprocess.run([sys.executable, "-m", "devprod.cli", *argv], cwd=folder, env=env, input=case.stdin or "",
                            capture_output=True, text=True, timeout=120)
    check(case, result.returncode, result.stdout, result.stderr)
