"""The box's idle decision, run for real: scripts/host/devprod-idle-stop.py against a simulated box.

Each test builds a fake /proc (processes and /proc/stat), /dev/pts ttys with
access times, a `who` listing, the keep-awake marker directory and a clock,
then runs the script once per simulated minute, as the systemd timer does.
poweroff and wall are stand-ins that record their calls.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "host" / "devprod-idle-stop.py"
KEEPAWAKE = ROOT / "scripts" / "host" / "devprod-keepawake.sh"
START = 1_800_000_000
WINDOW, WARN = 12, 4  # minutes (short, so a test runs fewer ticks)


class Box:
    def __init__(self, root: Path, keepawake_processes: str = ""):
        self.root = root
        self.now = START
        self.proc, self.dev, self.state, self.markers = (root / d for d in ("proc", "dev", "state", "markers"))
        for d in (self.proc, self.dev / "pts", self.markers):
            d.mkdir(parents=True)
        (root / "idle-stop.conf").write_text(
            f"IDLE_MINUTES={WINDOW}\nCPU_PERCENT=5\nWARN_MINUTES={WARN}\nKEEPAWAKE_PROCESSES='{keepawake_processes}'\n"
        )
        (root / "who").write_text("")
        self.jiffies = [0, 0]  # busy, idle
        self.busy_percent = 1.0
        self._write_stat()
        self.add_process(1, "systemd", "/usr/lib/systemd/systemd", 0)

    # ------------------------------------------------------------ the simulated box
    def add_process(self, pid: int, comm: str, cmdline: str, ppid: int = 1) -> None:
        comm = comm[:15]  # the kernel keeps 15 characters of a process name (TASK_COMM_LEN)
        d = self.proc / str(pid)
        d.mkdir()
        (d / "comm").write_text(comm + "\n")
        (d / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
        (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1\n")

    def kill(self, pid: int) -> None:
        for f in (self.proc / str(pid)).iterdir():
            f.unlink()
        (self.proc / str(pid)).rmdir()

    def login(self, tty: str, user: str = "alice") -> None:
        with (self.root / "who").open("a") as handle:
            handle.write(f"{user}    {tty}        2027-01-15 08:00 (10.0.0.9)\n")
        (self.dev / tty).touch()
        self.type_in(tty)

    def type_in(self, tty: str) -> None:
        os.utime(self.dev / tty, (self.now, self.now))

    def _write_stat(self) -> None:
        busy, idle = self.jiffies
        (self.proc / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\n")

    # ------------------------------------------------------------ the timer
    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "DEVPROD_IDLE_CONF": str(self.root / "idle-stop.conf"),
            "DEVPROD_PROC": str(self.proc),
            "DEVPROD_DEV": str(self.dev),
            "DEVPROD_WHO": f"cat {self.root / 'who'}",
            "DEVPROD_STATE_DIR": str(self.state),
            "DEVPROD_KEEPAWAKE_DIR": str(self.markers),
            "DEVPROD_NOW": str(self.now),
            "DEVPROD_POWEROFF": f"sh -c 'echo poweroff >> {self.root / 'poweroff.log'}'",
            "DEVPROD_WALL": f"sh -c 'cat >> {self.root / 'wall.log'}'",
        }

    def minute(self) -> str:
        """One timer tick: a minute of CPU at the current load passes, then the script runs."""
        self.now += 60
        per_minute = 6000  # jiffies across all CPUs
        busy = int(per_minute * self.busy_percent / 100)
        self.jiffies = [self.jiffies[0] + busy, self.jiffies[1] + per_minute - busy]
        self._write_stat()
        result = subprocess.run([sys.executable, str(SCRIPT)], env=self.env(), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def run_minutes(self, n: int) -> str:
        return "".join(self.minute() for _ in range(n))

    def jump(self, minutes: int) -> str:
        """Minutes pass at the current load with the timer not firing (a long test, shortened), then one tick."""
        self.now += 60 * (minutes - 1)
        per_minute = 6000 * (minutes - 1)
        busy = int(per_minute * self.busy_percent / 100)
        self.jiffies = [self.jiffies[0] + busy, self.jiffies[1] + per_minute - busy]
        return self.minute()

    @property
    def stopped(self) -> bool:
        return (self.root / "poweroff.log").exists()

    @property
    def walls(self) -> str:
        path = self.root / "wall.log"
        return path.read_text() if path.exists() else ""

    def keepawake(self, duration: str, user: str = "alice") -> subprocess.CompletedProcess:
        env = {"PATH": os.environ["PATH"], "USER": user, "DEVPROD_KEEPAWAKE_DIR": str(self.markers), "DEVPROD_NOW": str(self.now)}
        return subprocess.run(["bash", str(KEEPAWAKE), duration], env=env, capture_output=True, text=True)

    def write_marker(self, name: str, expiry: int) -> None:
        (self.markers / name).write_text(f"{expiry}\n")


@pytest.fixture
def box(tmp_path) -> Box:
    """A box just booted: its first tick only takes the CPU baseline."""
    booted = Box(tmp_path)
    booted.minute()
    return booted


def test_nothing_going_on_stops_after_the_window_and_not_before(box):
    box.run_minutes(WINDOW)  # idle from the first measured minute on: the countdown ends on the next tick
    assert not box.stopped
    out = box.run_minutes(1)
    assert box.stopped, out
    assert "powering off" in out


def test_terminals_are_warned_before_the_stop_with_how_to_postpone(box):
    box.login("pts/0")
    box.run_minutes(WINDOW)  # typed into at login, then forgotten: counts for the window
    assert not box.stopped and box.walls == ""
    box.run_minutes(WINDOW - WARN)
    assert "stops in 4 minutes" in box.walls and "devprod-keepawake 1h" in box.walls, box.walls
    assert box.walls.count("stops in") == 1  # warned once, not every minute
    box.run_minutes(WARN)
    assert box.stopped


def test_an_open_terminal_in_use_keeps_the_box_up(box):
    box.login("pts/0")
    box.add_process(400, "sshd", "sshd: alice@pts/0", 300)
    for _ in range(2 * WINDOW):
        box.minute()
        if box.now % 300 == 0:
            box.type_in("pts/0")  # reading code: a key now and then
    assert not box.stopped and box.walls == ""


def test_vscode_remote_session_without_a_terminal_keeps_the_box_up(box):
    box.add_process(410, "sshd", "sshd: alice@notty", 300)
    out = box.run_minutes(2 * WINDOW)
    assert not box.stopped, out
    box.kill(410)
    box.run_minutes(WINDOW + 1)
    assert box.stopped


def test_session_manager_shell_keeps_the_box_up_but_an_ssh_tunnel_worker_alone_does_not(box):
    box.add_process(500, "ssm-session-worker", "/usr/bin/ssm-session-worker alice-0abc i-0123", 450)
    box.run_minutes(WINDOW + 2)
    assert box.stopped, "a worker with no shell is an SSH port forward; its sshd session is what counts"
    other = Box(box.root / "second")
    other.minute()
    other.add_process(500, "ssm-session-worker", "/usr/bin/ssm-session-worker alice-0abc i-0123", 450)
    other.add_process(501, "sh", "sh", 500)
    other.run_minutes(2 * WINDOW)
    assert not other.stopped


def test_no_session_but_a_busy_job_keeps_the_box_up(box):
    box.busy_percent = 40.0
    box.run_minutes(2 * WINDOW)
    assert not box.stopped
    box.busy_percent = 1.0
    box.run_minutes(WINDOW + 1)
    assert box.stopped


def test_low_cpu_job_named_in_the_keepawake_list_keeps_the_box_up(tmp_path):
    box = Box(tmp_path, keepawake_processes="make pytest")
    box.minute()
    box.add_process(600, "pytest", "python -m pytest tests", 1)
    box.run_minutes(2 * WINDOW)
    assert not box.stopped


def test_keepawake_postpones_and_the_stop_follows_when_it_expires(box):
    box.login("pts/0")
    box.run_minutes(2 * WINDOW - WARN)
    assert "stops in" in box.walls
    result = box.keepawake("1h")  # the real command, on the simulated clock
    assert result.returncode == 0, result.stderr
    box.run_minutes(60)
    assert not box.stopped
    box.run_minutes(WINDOW + 1)
    assert box.stopped


def test_expired_marker_is_ignored(box):
    box.write_marker("alice", box.now - 60)
    box.run_minutes(WINDOW + 1)
    assert box.stopped


def test_forged_marker_is_bounded_to_twelve_hours(box):
    box.write_marker("alice", 4_000_000_000)  # the year 2096
    box.minute()  # first seen now
    for _ in range(11):
        box.jump(60)
    box.jump(58)
    assert not box.stopped, "honoured for 12 hours"
    box.run_minutes(3)
    assert not box.stopped
    box.run_minutes(WINDOW)
    assert box.stopped


def test_marker_that_is_a_symlink_or_fifo_is_not_read(box):
    target = box.root / "elsewhere"
    target.write_text(f"{box.now + 36000}\n")
    (box.markers / "alice").symlink_to(target)
    os.mkfifo(box.markers / "bob")
    box.run_minutes(WINDOW + 1)  # a FIFO read would hang the run; the timeout in minute() catches it
    assert box.stopped


def test_keepawake_refuses_a_bad_duration_and_caps_a_long_one(box):
    assert box.keepawake("forever").returncode == 2
    result = box.keepawake("20h")
    assert result.returncode == 0 and "at most 12h" in result.stderr
    assert int((box.markers / "alice").read_text()) == box.now + 12 * 3600


def test_state_dir_open_to_others_is_refused(box):
    box.state.chmod(0o777)
    result = subprocess.run([sys.executable, str(SCRIPT)], env=box.env(), capture_output=True, text=True)
    assert result.returncode != 0 and "0700" in result.stderr


def test_idle_stop_off_does_nothing(box):
    (box.root / "idle-stop.conf").write_text("IDLE_MINUTES=0\n")
    box.run_minutes(2 * WINDOW)
    assert not box.stopped
