"""scripts/deploy.sh run for real: a local nginx and app, artifacts in moto's S3 server, the real AWS CLI.

Each test host (tests/deploy_host.py) has its own root-started nginx on free
loopback ports. The one emulated piece is `systemctl`
(tests/fixtures/bin/systemctl), which starts the fixture app in a slot
(APP_DIR/slots/<slot>/release, with that slot's env file) as the template
unit would, as the app user. Everything else is the production script doing
real downloads, checksums, tar, flock, renames, nginx -t and reloads,
privilege drops and HTTP health checks. The app starts in 0.2 s here to keep
the module fast; tests/test_zero_downtime.py runs it with a 1 s start, under load.

The trust boundary is tested with a real unprivileged user (APP_USER,
created once per session), so these tests need root, as deploy.sh does on the
host: without it they fail, saying so, rather than skip. Each simulated host
lives under a world-traversable directory, because pytest's own tmp dirs are
0700 and the app user must reach its release.

The host firewall ruleset (scripts/host/imds-root-only.nft) is loaded with the
real nft (Debian's nftables) into a fresh network namespace whose loopback
carries the metadata addresses, with an HTTP server there: root gets answers,
the app user is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import boto3
import pytest

from tests.conftest import ROOT
from tests.deploy_host import (
    APP_USER, DEPLOY, Host, app_gid, app_uid, as_app, get, sha,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def host(hosts_dir, aws_env):
    # A quick start keeps this module fast; tests/test_zero_downtime.py runs the slow-starting app.
    h = Host(hosts_dir, aws_env, start_delay=0.2)
    yield h
    h.stop()
    shutil.rmtree(h.root, ignore_errors=True)


def deployed(host: Host, release: str) -> None:
    host.publish(release)
    result = host.run("deploy", release)
    assert result.returncode == 0, result.stderr
    host.assert_serving(release)


def test_first_deploy_then_redeploy_is_a_noop(host):
    deployed(host, sha(1))
    result = host.run("deploy", sha(1))
    assert result.returncode == 0, result.stderr
    assert host.log_results() == ["success", "noop-healthy"]
    host.assert_serving(sha(1))


@pytest.mark.parametrize(
    "case",
    ["download-fails", "checksum-mismatch", "no-checksum", "planted-checksum-beside", "corrupt-tarball", "install-fails"],
)
def test_failures_before_the_switch_change_nothing(host, case):
    deployed(host, sha(1))
    new = sha(2)
    extra = {}
    if case == "checksum-mismatch":
        host.publish(new, checksum="0" * 64)
    elif case == "no-checksum":
        host.publish(new)
        extra["CHECKSUM"] = ""
    elif case == "planted-checksum-beside":
        # A poisoned tarball with a matching .sha256 planted beside it: the host
        # trusts only the digest the pipeline published (the parameter).
        host.publish(new)
        poisoned = host.tarball(new, "error")
        host.s3.put_object(Bucket=host.bucket, Key=f"releases/{new}.tar.gz", Body=poisoned)
        host.s3.put_object(Bucket=host.bucket, Key=f"releases/{new}.tar.gz.sha256",
                           Body=f"{hashlib.sha256(poisoned).hexdigest()}  {new}.tar.gz\n".encode())
    elif case == "corrupt-tarball":
        host.publish(new, body=b"this is not a gzip file at all")
    elif case == "install-fails":
        host.publish(new)
        extra["INSTALL_COMMAND"] = "echo installing; exit 3"
    result = host.run("deploy", new, **extra)
    assert result.returncode == 11, result.stderr
    host.assert_serving(sha(1))
    assert host.log_results()[-1] == "failed-before-switch"
    assert not (host.app_dir / "releases" / new).exists()


@pytest.mark.parametrize("mode", ["crash", "error", "hang", "redirect", "liar"])
def test_a_release_failing_its_gate_never_gets_traffic(host, mode):
    """D14: only 2xx from the new release itself passes (a 302 or another release's answer does not);
    the gate is on the new slot's own port, so nginx never routes a request to it."""
    deployed(host, sha(1))
    host.publish(sha(2), mode)
    new_port = host.slot_port("green")
    started = time.monotonic()
    result = host.run("deploy", sha(2), HEALTH_TIMEOUT="2")
    assert result.returncode == 11, result.stderr
    assert time.monotonic() - started < 20
    host.assert_serving(sha(1))  # the old slot alone runs and nginx routes to it
    assert host.log_results()[-1] == "failed-health-gate"
    assert host.log_lines()[-1]["live"] == sha(1)
    assert f":{new_port}" not in host.access_log.read_text()  # the upstream of every proxied request


def test_a_first_deploy_failing_its_gate_exits_14_with_nothing_live(host):
    host.publish(sha(1), "error")
    result = host.run("deploy", sha(1), HEALTH_TIMEOUT="2")
    assert result.returncode == 14, result.stderr
    assert not (host.app_dir / "current").is_symlink() and host.state() is None
    assert host.running_slots() == []
    assert host.log_results() == ["failed-health-gate"]


def test_killed_after_unpacking_then_next_deploy_succeeds(host):
    deployed(host, sha(1))
    host.publish(sha(2))
    marker = host.scratch / "unpacked"
    proc = host.start("deploy", sha(2), INSTALL_COMMAND=f"touch {marker}; sleep 30")
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "deploy never reached the install step"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    host.assert_serving(sha(1))
    assert (host.app_dir / "releases" / f"{sha(2)}.partial").exists()  # left behind by the kill
    result = host.run("deploy", sha(2))
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(2))
    assert not (host.app_dir / "releases" / f"{sha(2)}.partial").exists()


def test_two_deploys_at_once_only_one_switches(host):
    deployed(host, sha(1))
    host.publish(sha(2))
    host.publish(sha(3))
    first = host.start("deploy", sha(2), INSTALL_COMMAND="sleep 2")
    time.sleep(0.5)
    second = host.run("deploy", sha(3))
    first.wait(timeout=60)
    assert second.returncode == 12, second.stderr
    assert first.returncode == 0, first.stderr.read() if first.stderr else ""
    host.assert_serving(sha(2))
    assert sorted(host.log_results()[1:]) == ["busy", "success"]
    assert not (host.app_dir / "releases" / sha(3)).exists()


def test_rollback_to_previous_and_to_a_named_release(host):
    for n in (1, 2, 3):
        deployed(host, sha(n))
    result = host.run("rollback")
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(2))
    result = host.run("rollback", sha(1))
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(1))
    result = host.run("rollback")  # previous is now sha(2): rollback goes back and forth
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(2))


def test_rollback_without_previous_changes_nothing(host):
    deployed(host, sha(1))
    result = host.run("rollback")
    assert result.returncode == 11, result.stderr
    host.assert_serving(sha(1))
    assert host.log_results()[-1] == "no-release-to-roll-back-to"


def test_retention_keeps_the_newest_and_never_live_or_previous(host):
    for n in range(1, 6):
        host.publish(sha(n))
        assert host.run("deploy", sha(n), KEEP_RELEASES="3").returncode == 0
    kept = sorted(p.name for p in (host.app_dir / "releases").iterdir())
    assert kept == sorted(sha(n) for n in range(3, 6))
    assert host.state() == ("blue", sha(5), sha(4))
    # KEEP_RELEASES=2 with live 3 and previous 5 after a rollback: 4 goes, neither of them.
    assert host.run("rollback", sha(3), KEEP_RELEASES="2").returncode == 0
    kept = sorted(p.name for p in (host.app_dir / "releases").iterdir())
    assert kept == sorted([sha(3), sha(5)]) and host.state() == ("green", sha(3), sha(5))


@pytest.mark.parametrize(
    "env, message",
    [
        ({"ACTION": "deploy", "RELEASE": "main; rm -rf /"}, "RELEASE must be a git sha"),
        ({"ACTION": "destroy", "RELEASE": sha(1)}, "ACTION must be deploy or rollback"),
        ({"ACTION": "deploy", "RELEASE": ""}, "deploy needs RELEASE"),
        ({"ACTION": "deploy", "RELEASE": sha(1), "KEEP_RELEASES": "1"}, "KEEP_RELEASES must be at least 2"),
        ({"ACTION": "deploy", "RELEASE": sha(1), "CHECKSUM": "abc"}, "CHECKSUM must be a sha256 (64 hex digits)"),
        ({"ACTION": "deploy", "RELEASE": sha(1), "CHECKSUM": "g" * 64}, "CHECKSUM must be a sha256 (64 hex digits)"),
    ],
)
def test_bad_input_exits_13_before_touching_anything(host, env, message):
    result = subprocess.run(["bash", str(DEPLOY)], env={**host.env(), **env}, capture_output=True, text=True)
    assert result.returncode == 13 and message in result.stderr
    assert not host.app_dir.exists()
    # D11: logged, once, without copying the bad value into the log.
    (line,) = host.log_lines()
    assert line["result"] == "bad-input" and line["release"] in (env["RELEASE"] or "none", "invalid"), line
    assert "rm" not in host.deploy_log.read_text()


def live_env_file(host: Host) -> Path:
    return host.app_dir / "slots" / host.state()[0] / "env"


def test_parameter_store_values_become_an_env_file_the_app_reads_but_cannot_write(host, aws_env):
    path = secure_parameters(aws_env, DATABASE_URL="postgres://u:p@db/app", FEATURE="on")
    host.publish(sha(1))
    result = host.run("deploy", sha(1), PARAMETER_PATH=path)
    assert result.returncode == 0, result.stderr
    env_file = live_env_file(host)
    assert env_file.read_text().splitlines() == ['DATABASE_URL="postgres://u:p@db/app"', 'FEATURE="on"']
    info = env_file.stat()
    assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (0o640, 0, app_gid()), info
    assert as_app("cat", str(env_file)).returncode == 0
    assert as_app("sh", "-c", f"echo FEATURE=off >> {env_file}").returncode != 0
    assert as_app("mv", str(env_file), str(env_file) + ".x").returncode != 0
    env = get(host.url("/env"))[1]["env"]
    assert (env["DATABASE_URL"], env["FEATURE"]) == ("postgres://u:p@db/app", "on")


def test_checksum_hex_case_does_not_matter(host):
    host.publish(sha(1))
    result = host.run("deploy", sha(1), CHECKSUM=host.published[sha(1)].upper())
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(1))


def test_the_ssm_documents_script_deploys(host, stack_project):
    """The document's runCommand, run by /bin/sh as the SSM agent would, with SSM_* variables.

    Only the settings lines are pointed at this test host; the rest (the
    SSM_* mapping and the heredoc carrying deploy.sh) runs as planned.
    """
    from devprod.plan import plan_stack

    doc = json.loads(plan_stack(stack_project, "prod").named("production-deploy").inputs["content"])
    commands = doc["mainSteps"][0]["inputs"]["runCommand"]
    # Whatever points at the host (paths, ports, nginx) comes from the test host; the rest is as planned.
    local = host.env(INSTALL_COMMAND="''", PARAMETER_PATH="''", UNIT_DIR=str(host.root / "units"))
    pointed = {"APP_DIR", "ARTIFACT_BUCKET", "INSTALL_COMMAND", "HEALTH_URL", "PARAMETER_PATH", "UNIT_DIR", "APP_USER",
               "DEPLOY_LOG", "BLUE_PORT", "GREEN_PORT", "PROXY_LISTEN", "NGINX_SITE", "NGINX_UPSTREAM", "ACCESS_LOG"}
    overrides = {key: local[key] for key in pointed}
    settings = [line.removeprefix("export ").split("=", 1)[0] for line in commands if line.startswith("export ")]
    assert {"APP_USER", "INSTALL_TIMEOUT", "DEPLOY_LOG", "DRAIN_TIMEOUT", "MAX_BODY_MB"} | pointed <= set(settings), settings
    lines = []
    for line in commands:
        key = line.removeprefix("export ").split("=", 1)[0]
        lines.append(f"export {key}={overrides[key]}" if line.startswith("export ") and key in overrides else line)
    script = host.root / "_script.sh"
    script.write_text("\n".join(lines) + "\n")
    host.publish(sha(1))
    env = {k: v for k, v in host.env().items() if k not in {"ACTION", "RELEASE", *pointed}}
    result = subprocess.run(["sh", str(script)], env={**env, "SSM_release": sha(1), "SSM_action": "deploy",
                                                      "SSM_checksum": host.published[sha(1)]},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(1))
    result = subprocess.run(["sh", str(script)], env={**env, "SSM_release": "", "SSM_action": "rollback"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 11 and host.log_results()[-1] == "no-release-to-roll-back-to"


def test_slot_drop_ins_follow_the_ports_and_the_start_command_escaped_for_systemd(host):
    """D19: systemd expands % specifiers and $VARIABLES in ExecStart=; the drop-ins double them."""
    unit_dir = host.root / "units"
    settings = {"UNIT_DIR": str(unit_dir), "APP_START_COMMAND": "node server.js --greeting=100%d $HOME"}
    host.publish(sha(1))
    host.publish(sha(2))
    assert host.run("deploy", sha(1), **settings).returncode == 0
    for slot, port in (("blue", host.blue_port), ("green", host.green_port)):
        assert (unit_dir / f"devprod-app@{slot}.service.d" / "50-devprod.conf").read_text() == (
            f"[Service]\nEnvironment=PORT={port}\nExecStart=\n"
            "ExecStart=/bin/bash -c 'node server.js --greeting=100%%d $$HOME'\n"
        )
    # Real systemd reads them: with the template in the search path, an unescaped % would be refused.
    (unit_dir / "devprod-app@.service").write_text("[Service]\nExecStart=/bin/true\n")
    for slot in ("blue", "green"):
        verify = subprocess.run(["systemd-analyze", "verify", f"devprod-app@{slot}.service"], cwd=unit_dir,
                                env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"}, capture_output=True, text=True)
        assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    assert host.run("deploy", sha(2), **settings).returncode == 0  # unchanged: no second reload
    calls = (host.root / "systemctl.calls").read_text().splitlines()
    assert calls.count("daemon-reload") == 1, calls
    for bad in ("echo 'quoted'", "echo a\\nb"):
        result = host.run("deploy", sha(1), **{**settings, "APP_START_COMMAND": bad})
        assert result.returncode == 13 and "without single quotes or backslashes" in result.stderr


# ------------------------------------------------------------------ the host's trust boundary (S23, D9, D10)


def member(name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "", mode: int = 0o644, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.size = kind, linkname, mode, size
    return info


def test_install_step_runs_as_the_app_user_with_a_clean_environment(host):
    host.publish(sha(1))
    out = host.scratch / "install"
    result = host.run("deploy", sha(1), INSTALL_COMMAND=f"id -u > {out}.uid; env > {out}.env; ls -l /proc/self/fd > {out}.fds",
                      SECRET_LOOKING="do-not-pass")
    assert result.returncode == 0, result.stderr
    assert int(Path(f"{out}.uid").read_text()) == app_uid()
    env = Path(f"{out}.env").read_text()
    assert "SECRET_LOOKING" not in env and "AWS_" not in env, env
    assert f"HOME={host.app_dir}/releases/{sha(1)}.home" in env, env
    fds = Path(f"{out}.fds").read_text()
    assert "lock" not in fds, fds  # fd 9, the deploy lock, is not inherited
    host.assert_serving(sha(1))
    assert not (host.app_dir / "releases" / f"{sha(1)}.home").exists()


def test_after_the_install_the_release_is_roots_and_the_app_cannot_change_any_of_it(host):
    host.publish(sha(1))
    host.publish(sha(2))
    assert host.run("deploy", sha(1)).returncode == 0
    # The install step may write its release (here: a build output) and nothing else.
    result = host.run("deploy", sha(2), INSTALL_COMMAND="mkdir build && echo built > build/out && chmod -R 0777 build")
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(2))
    # The app runs as the app user, as the unit's User= has it (the stand-in systemctl does the same).
    pid = (host.root / f"slot-{host.state()[0]}.pid").read_text().strip()
    uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
    assert uids.split()[1:] == [str(app_uid())] * 4, uids
    app_dir = host.app_dir
    for release in (sha(1), sha(2)):
        for path in (app_dir / "releases" / release).rglob("*"):
            info = path.lstat()
            assert info.st_uid == 0 and info.st_mode & 0o7022 == 0, (path, oct(info.st_mode), info.st_uid)
    built = app_dir / "releases" / sha(2) / "build" / "out"
    assert as_app("cat", str(built)).stdout == "built\n"  # the app reads its release
    attempts = {
        "append to own code": f"echo x >> {app_dir}/current/server.py",
        "write into own release": f"touch {app_dir}/current/new",
        "write built output": f"echo x >> {built}",
        "write an older release": f"touch {app_dir}/releases/{sha(1)}/new",
        "add a release": f"mkdir {app_dir}/releases/{sha(3)}",
        "replace current": f"ln -sfn releases/{sha(1)} {app_dir}/current",
        "chmod own release": f"chmod 0777 {app_dir}/current/",
        "plant a link in shared": f"ln -s /tmp/x {app_dir}/shared/env.tmp",
        "read deploy state": f"ls {app_dir}/.deploy",
        "append to the deploy log": f"echo forged >> {host.deploy_log}",
        "replace the deploy log": f"mv {host.deploy_log} {host.deploy_log}.x",
        "write the nginx upstream": f"echo x >> {host.upstream}",
        "replace the nginx site": f"mv {host.site} {host.site}.x",
        "write a slot's env": f"echo X=1 >> {app_dir}/slots/blue/env",
        "repoint a slot": f"ln -sfn ../../releases/{sha(1)} {app_dir}/slots/blue/release",
        "write the deploy state": f"echo x > {app_dir}/.deploy/state",
    }
    for what, command in attempts.items():
        assert as_app("sh", "-c", command).returncode != 0, what
    # What it may do: write its data directory.
    assert as_app("sh", "-c", f"echo ok > {app_dir}/shared/data/note").returncode == 0
    assert host.deploy_log.stat().st_uid == 0 and host.deploy_log.stat().st_mode & 0o777 == 0o644
    assert host.log_results() == ["success", "success"]
    for path in (host.upstream, host.site, app_dir / "slots" / "blue" / "env", app_dir / "slots"):
        assert path.stat().st_uid == 0 and path.stat().st_mode & 0o022 == 0, path


def test_setuid_and_writable_modes_in_the_archive_are_neutralised(host):
    deployed(host, sha(1))
    odd = (member("bin", tarfile.DIRTYPE, mode=0o7777), member("bin/tool", mode=0o6777, size=1),
           member("sticky", mode=0o1666, size=1))
    host.publish(sha(2), body=host.tarball(sha(2), extra=odd))
    result = host.run("deploy", sha(2))
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(2))
    for name in ("bin", "bin/tool", "sticky"):
        info = (host.app_dir / "releases" / sha(2) / name).stat()
        assert info.st_mode & 0o7022 == 0 and info.st_uid == 0, (name, oct(info.st_mode))


@pytest.mark.parametrize(
    "bad, why",
    [
        (member("/tmp/devprod-absolute", size=1), "absolute member name"),
        (member("../escaped", size=1), "'..' in member name"),
        (member("lib/../../escaped", size=1), "'..' in member name"),
        (member("etc", tarfile.SYMTYPE, linkname="/etc"), "leaves the release"),
        (member("up", tarfile.SYMTYPE, linkname="../.."), "leaves the release"),
        (member("shadow", tarfile.LNKTYPE, linkname="/etc/shadow"), "hard link"),
        (member("copy", tarfile.LNKTYPE, linkname="server.py"), "hard link"),
        (member("null", tarfile.CHRTYPE), "device node or fifo"),
        (member("disk", tarfile.BLKTYPE), "device node or fifo"),
        (member("pipe", tarfile.FIFOTYPE), "device node or fifo"),
    ],
    ids=lambda v: v.name if isinstance(v, tarfile.TarInfo) else None,
)
def test_unsafe_archive_members_are_refused_before_the_switch(host, bad, why):
    deployed(host, sha(1))
    host.publish(sha(2), body=host.tarball(sha(2), extra=(bad,)))
    result = host.run("deploy", sha(2), INSTALL_COMMAND=f"touch {host.scratch}/installed")
    assert result.returncode == 11, result.stderr
    assert why in result.stderr and "archive refused" in result.stderr, result.stderr
    host.assert_serving(sha(1))
    assert host.log_results()[-1] == "failed-before-switch"
    assert not (host.app_dir / "releases" / sha(2)).exists()
    assert not (host.scratch / "installed").exists()  # refused before any of it ran
    assert not Path("/tmp/devprod-absolute").exists() and not (host.app_dir / "escaped").exists()


def test_a_member_written_through_a_link_member_is_refused(host):
    deployed(host, sha(1))
    # Each link alone stays inside; the file below the link would be written wherever it points.
    members = (member("lib", tarfile.SYMTYPE, linkname="."), member("lib/server.py", size=1))
    host.publish(sha(2), body=host.tarball(sha(2), extra=members))
    result = host.run("deploy", sha(2))
    assert result.returncode == 11 and "below a link member" in result.stderr, result.stderr
    host.assert_serving(sha(1))


def test_links_inside_the_release_are_kept(host):
    members = (member("lib", tarfile.DIRTYPE, mode=0o755), member("lib/app.py", size=1),
               member("app.py", tarfile.SYMTYPE, linkname="lib/app.py"), member("lib/self", tarfile.SYMTYPE, linkname="../lib"),
               member("later", tarfile.SYMTYPE, linkname="made/by/install"))
    host.publish(sha(1), body=host.tarball(sha(1), extra=members))
    result = host.run("deploy", sha(1))
    assert result.returncode == 0, result.stderr
    assert os.readlink(host.app_dir / "releases" / sha(1) / "app.py") == "lib/app.py"


def test_a_chain_of_links_that_leaves_the_release_is_refused_on_disk(host):
    """Each link looks harmless on its own; resolved on disk, the second one leaves the release.

    `deep/er/top -> ../..` is the release root; `deep/er/out -> top/..` is then its parent.
    """
    deployed(host, sha(1))
    members = (member("deep/er", tarfile.DIRTYPE, mode=0o755), member("deep/er/top", tarfile.SYMTYPE, linkname="../.."),
               member("deep/er/out", tarfile.SYMTYPE, linkname="top/.."))
    host.publish(sha(2), body=host.tarball(sha(2), extra=members))
    result = host.run("deploy", sha(2))
    assert result.returncode == 11, result.stderr
    assert "'deep/er/out': symlink leaves the release" in result.stderr and "unpacked release refused" in result.stderr
    host.assert_serving(sha(1))


def test_install_timeout_fails_before_the_switch_and_kills_what_it_started(host):
    deployed(host, sha(1))
    host.publish(sha(2))
    started = time.monotonic()
    result = host.run("deploy", sha(2), INSTALL_TIMEOUT="1",
                      INSTALL_COMMAND=f"setsid sh -c 'sleep 2; touch {host.scratch}/survived' & sleep 30")
    assert result.returncode == 11, result.stderr
    assert "install step timed out after 1s" in result.stderr
    assert time.monotonic() - started < 10
    host.assert_serving(sha(1))
    assert host.log_results()[-1] == "failed-before-switch"
    time.sleep(2)  # the detached process would have woken by now (the install started a second or more ago)
    assert not (host.scratch / "survived").exists(), "a process the install step started outlived it"


def test_a_process_the_install_step_leaves_behind_is_killed(host):
    deployed(host, sha(1))
    host.publish(sha(2))
    # Succeeds at once, leaving a detached process that would rewrite the release after the hand-over.
    command = f"setsid sh -c 'sleep 1; echo tampered >> server.py; touch {host.scratch}/survived' >/dev/null 2>&1 &"
    result = host.run("deploy", sha(2), INSTALL_COMMAND=command)
    assert result.returncode == 0, result.stderr
    time.sleep(1.5)
    assert not (host.scratch / "survived").exists()
    assert "tampered" not in (host.app_dir / "releases" / sha(2) / "server.py").read_text()


def test_a_hard_link_made_by_the_install_step_is_refused(host):
    deployed(host, sha(1))
    host.publish(sha(2))
    # A file the app user owns outside the release: the ownership pass must not turn it into root's.
    outside = host.app_dir / "shared" / "data" / "mine"
    result = host.run("deploy", sha(2), INSTALL_COMMAND=f"touch {outside} && ln {outside} linked")
    assert result.returncode == 11 and "hard links" in result.stderr, result.stderr
    assert outside.stat().st_uid == app_uid()
    host.assert_serving(sha(1))


def secure_parameters(aws_env: dict[str, str], **values: str) -> str:
    """A fresh Parameter Store path in moto's server holding `values` as SecureStrings."""
    ssm = boto3.client("ssm", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="eu-central-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    path = f"/devprod/test-{uuid.uuid4().hex[:8]}/app"
    for name, value in values.items():
        ssm.put_parameter(Name=f"{path}/{name}", Value=value, Type="SecureString")
    return path


@pytest.mark.parametrize("with_parameters", [True, False], ids=["env-written", "no-parameters"])
def test_an_old_layout_is_taken_back_and_planted_links_do_not_redirect_root(host, aws_env, with_parameters):
    """A host set up when the app user owned shared/: what it planted there must not steer root.

    The old shared env file is gone (each slot has its own, in root's slots/), so a link
    planted at shared/env is removed, never written through.
    """
    extra = {"PARAMETER_PATH": secure_parameters(aws_env, TOKEN="s3cret")} if with_parameters else {}
    shared = host.app_dir / "shared"
    shared.mkdir(parents=True)
    shutil.chown(shared, APP_USER, APP_USER)
    shared.chmod(0o750)
    victims = [host.root / "victim-env", host.root / "victim-tmp", host.root / "victim-data"]
    for victim in victims:
        victim.write_text("untouched\n")
    for name, victim in zip(("env", ".env.tmp", "data"), victims):
        assert as_app("ln", "-s", str(victim), str(shared / name)).returncode == 0  # the app can, in the old layout
    host.publish(sha(1))
    result = host.run("deploy", sha(1), **extra)
    assert result.returncode == 0, result.stderr
    host.assert_serving(sha(1))
    for victim in victims:
        assert victim.read_text() == "untouched\n" and victim.stat().st_uid == 0
    assert shared.stat().st_uid == 0 and shared.stat().st_mode & 0o777 == 0o755
    assert not os.path.lexists(shared / "env") and not os.path.lexists(shared / ".env.tmp")
    env_file = live_env_file(host)
    assert not env_file.is_symlink() and env_file.read_text() == ('TOKEN="s3cret"\n' if with_parameters else "")
    data = shared / "data"
    assert not data.is_symlink() and data.is_dir() and data.stat().st_uid == app_uid()
    # And now the app user can plant nothing there any more.
    assert as_app("ln", "-s", str(victims[0]), str(shared / "planted")).returncode != 0
    assert as_app("ln", "-sfn", str(victims[0]), str(env_file)).returncode != 0


@pytest.mark.parametrize("kind", ["symlink", "hard link"])
def test_a_link_at_a_slot_env_file_does_not_redirect_the_write(host, aws_env, kind):
    """Whatever is at slots/<slot>/env, even a link root itself left there, is replaced by rename,
    never written through."""
    path = secure_parameters(aws_env, TOKEN="s3cret")
    deployed(host, sha(1))
    victim = host.root / "victim"
    victim.write_text("untouched\n")
    env_file = host.app_dir / "slots" / "green" / "env"  # the idle slot, where the next release starts
    env_file.unlink(missing_ok=True)
    if kind == "symlink":
        env_file.symlink_to(victim)
    else:
        os.link(victim, env_file)
    host.publish(sha(2))
    result = host.run("deploy", sha(2), PARAMETER_PATH=path)
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "untouched\n"
    assert not env_file.is_symlink() and env_file.read_text() == 'TOKEN="s3cret"\n'


@pytest.mark.parametrize("setting, value, message", [
    ("APP_USER", "root", "APP_USER must not be root"),
    ("APP_USER", "no-such-user-here", "does not exist"),
    ("INSTALL_TIMEOUT", "0", "INSTALL_TIMEOUT must be at least 1"),
])
def test_app_user_and_timeout_are_checked(host, setting, value, message):
    host.publish(sha(1))
    result = host.run("deploy", sha(1), **{setting: value})
    assert result.returncode == 13 and message in result.stderr, result.stderr
    assert not host.app_dir.exists()


def test_a_deploy_log_directory_others_can_write_is_refused(host):
    shared_dir = host.root / "log"
    shared_dir.mkdir(mode=0o777)
    shared_dir.chmod(0o1777)
    host.publish(sha(1))
    result = host.run("deploy", sha(1))
    assert result.returncode == 13 and "must be root's and not group/world-writable" in result.stderr, result.stderr
    assert not host.app_dir.exists()


IMDS_RULESET = ROOT / "scripts" / "host" / "imds-root-only.nft"
IMDS_PROBE = r"""
set -Eeuo pipefail
ip link set lo up
ip addr add 169.254.169.254/32 dev lo
ip addr add 169.254.169.253/32 dev lo
ip -6 addr add fd00:ec2::254/128 dev lo
mkdir -p "$WEB/latest" && echo role-credentials > "$WEB/latest/credentials"
/usr/bin/python3 -m http.server 80 --bind :: --directory "$WEB" >/dev/null 2>&1 &
server=$!
trap 'kill "$server"' EXIT
for _ in $(seq 100); do curl -s -o /dev/null http://169.254.169.254/ && break; sleep 0.02; done
probe() {  # who url: prints who, url, HTTP status (000: none) and curl's exit code (7: refused)
  local as=() code rc=0
  [[ "$1" == root ]] || as=(runuser -u "$APP_USER" --)
  code=$("${as[@]}" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$2") || rc=$?
  echo "$1 $2 $code $rc"
}
probe app-before http://169.254.169.254/latest/credentials
nft -f "$RULESET"
nft -f "$RULESET"  # loading again replaces the table, it does not add a second one
[[ "$(nft list tables | grep -c devprod_imds)" == 1 ]] || { echo "table loaded twice"; exit 1; }
for url in http://169.254.169.254/latest/credentials "http://[fd00:ec2::254]/latest/credentials" \
           "http://[::ffff:169.254.169.254]/latest/credentials" http://169.254.169.253/latest/credentials; do
  probe root "$url"
  probe app "$url"
done
"""


def test_host_firewall_lets_only_root_reach_the_metadata_service(app_user, tmp_path):
    for tool in ("nft", "ip", "unshare", "curl"):
        assert shutil.which(tool), f"{tool} missing: `make system-deps` installs nftables, iproute2, util-linux, curl"
    web = tmp_path / "web"
    started = time.monotonic()
    result = subprocess.run(["unshare", "--net", "bash", "-c", IMDS_PROBE], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "WEB": str(web), "RULESET": str(IMDS_RULESET), "APP_USER": app_user})
    assert result.returncode == 0, result.stdout + result.stderr
    answers = {tuple(line.split()[:2]): " ".join(line.split()[2:]) for line in result.stdout.splitlines()}
    v4, v6 = "http://169.254.169.254/latest/credentials", "http://[fd00:ec2::254]/latest/credentials"
    mapped, dns = "http://[::ffff:169.254.169.254]/latest/credentials", "http://169.254.169.253/latest/credentials"
    assert answers[("app-before", v4)] == "200 0", answers  # without the table the app would get the credentials
    assert answers[("root", v4)] == answers[("root", v6)] == answers[("root", mapped)] == "200 0", answers
    # Refused at once (curl 7), not left to time out.
    assert answers[("app", v4)] == answers[("app", v6)] == answers[("app", mapped)] == "000 7", answers
    assert answers[("app", dns)] == answers[("root", dns)] == "200 0", answers  # only the metadata address is closed
    assert time.monotonic() - started < 5
