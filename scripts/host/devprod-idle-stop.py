#!/usr/bin/env python3
"""Powers a developer box off after it has been idle, judged by what the developer is doing.

Run every minute by devprod-idle-stop.timer (installed by scripts/user-data/dev.sh).
Idle means, continuously for IDLE_MINUTES: no SSH session without a terminal
(VS Code Remote, scp, port forwards), no Session Manager shell, no terminal
typed into within IDLE_MINUTES, no keep-awake marker in force
(`devprod-keepawake 3h`), no process named in KEEPAWAKE_PROCESSES, and CPU
below CPU_PERCENT. Logged-in terminals are warned WARN_MINUTES before the stop.
The stop is `systemctl poweroff`: EC2 turns a guest shutdown into a stop when
the instance's shutdown behaviour is "stop" (DeveloperInstance sets it), so the
box needs no IAM permission to stop itself.

Every input is overridable for tests; the defaults are the real ones:
  DEVPROD_IDLE_CONF   settings file (KEY=value lines)   /etc/devprod/idle-stop.conf
  DEVPROD_PROC        proc filesystem                   /proc
  DEVPROD_DEV         where tty devices live            /dev
  DEVPROD_WHO         command listing utmp logins       who
  DEVPROD_STATE_DIR   root-only state (tmpfs: a boot starts afresh)  /run/devprod/idle-stop
  DEVPROD_KEEPAWAKE_DIR  markers written by devprod-keepawake  /run/devprod/keepawake
  DEVPROD_NOW         the clock, epoch seconds          time.time()
  DEVPROD_POWEROFF    the stop command                  systemctl poweroff
  DEVPROD_WALL        the warning command (message on stdin)  wall
Exit codes: 0 decided (awake, counting, warned or stopping), 2 bad settings.
Python 3.9 compatible: AL2023's system python.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import time

DEFAULTS = {
    "IDLE_MINUTES": "60",  # 0: idle stop off
    "CPU_PERCENT": "5",
    "WARN_MINUTES": "10",
    "KEEPAWAKE_PROCESSES": "",
    "KEEPAWAKE_MAX_HOURS": "12",
}
# A keep-awake marker is honoured for at most this long after the script
# first saw it, whatever expiry it names: the marker directory is writable by
# the developer, so a hand-written "expires in 2099" must not keep a billed
# box up for ever. 12 h covers a long run left overnight; renewing means
# running devprod-keepawake again, a deliberate act each time.
MARKER_MAX_BYTES = 64
# `sshd: alice@pts/0`, `sshd: alice@notty`; OpenSSH 9.8+ names it sshd-session.
SSHD_SESSION = re.compile(r"^sshd(?:-session)?: ([^@\s]+)@(notty|pts/\d+)")


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} devprod-idle-stop: {message}", flush=True)


def settings() -> dict:
    path = os.environ.get("DEVPROD_IDLE_CONF", "/etc/devprod/idle-stop.conf")
    values = dict(DEFAULTS)
    try:
        with open(path) as handle:
            for line in handle:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, _, value = line.partition("=")
                    values[key.strip()] = value.strip().strip("'\"")
    except FileNotFoundError:
        pass
    try:
        return {
            "idle": int(values["IDLE_MINUTES"]) * 60,
            "cpu": float(values["CPU_PERCENT"]),
            "warn": int(values["WARN_MINUTES"]) * 60,
            "processes": set(values["KEEPAWAKE_PROCESSES"].replace(",", " ").split()),
            "max_keepawake": float(values["KEEPAWAKE_MAX_HOURS"]) * 3600,
        }
    except ValueError as exc:
        log(f"bad setting in {path}: {exc}")
        sys.exit(2)


def processes(proc: str):
    """(pid, comm, cmdline, ppid) of every process still there when read."""
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "comm")) as handle:
                comm = handle.read().strip()
            with open(os.path.join(proc, entry, "cmdline"), "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            with open(os.path.join(proc, entry, "stat")) as handle:
                # The name in parentheses may hold spaces: ppid is the 2nd field after it.
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        yield int(entry), comm, cmdline, ppid


def tty_idle_seconds(dev: str, tty: str, now: float) -> float | None:
    try:
        return now - os.stat(os.path.join(dev, tty)).st_atime  # what `who -u` reports as idle
    except OSError:
        return None


def utmp_ttys() -> set:
    command = shlex.split(os.environ.get("DEVPROD_WHO", "who"))
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"cannot list logins ({exc}); counting that as a session")
        return {"?"}
    return {fields[1] for fields in (line.split() for line in out.splitlines()) if len(fields) >= 2}


# /proc/PID/comm holds the first 15 characters of a process name (TASK_COMM_LEN).
SESSION_WORKER = "ssm-session-worker"[:15]


def sessions(procs: list, dev: str, idle_window: float, now: float) -> list:
    """Reasons a connection keeps the box awake; [] when no developer is connected or all terminals are stale."""
    reasons, ttys = [], utmp_ttys()
    parents = {ppid for _, _, _, ppid in procs}
    for pid, comm, cmdline, _ in procs:
        match = SSHD_SESSION.match(cmdline)
        if match and match.group(2) == "notty":
            # VS Code Remote, scp, port forwards: no terminal whose input we
            # could see, so an open one always counts.
            reasons.append(f"ssh session of {match.group(1)} without a terminal")
        elif match:
            ttys.add(match.group(2))
        elif comm == SESSION_WORKER and pid in parents:
            # A Session Manager shell has a child (the shell). SSH over SSM is
            # a port forward with no child: its sshd session is counted above.
            # Session Manager ends idle shells itself (its idle timeout).
            reasons.append("Session Manager shell session")
    for tty in sorted(ttys):
        idle = None if tty == "?" else tty_idle_seconds(dev, tty, now)
        if idle is None or idle < idle_window:
            # A terminal counts while it was typed into within the window; a
            # forgotten one stops counting then, and gets the warning.
            reasons.append(f"terminal {tty} in use" if idle is not None else f"terminal {tty} (unknown idle time)")
    return reasons


def marker_expiry(path: str) -> int | None:
    """The expiry a marker names. Root reads a file the developer controls:
    no symlink, no FIFO or device, a few bytes only."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, MARKER_MAX_BYTES).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def keepawake(directory: str, state: dict, cfg: dict, procs: list, now: float) -> list:
    reasons, seen = [], {}
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        names = []
    for name in names:
        path = os.path.join(directory, name)
        expiry = marker_expiry(path)
        if expiry is None:
            continue
        try:
            ident = f"{name}:{os.lstat(path).st_ino}:{expiry}"
        except OSError:
            continue
        first = state.get("markers", {}).get(ident, now)
        seen[ident] = first
        until = min(expiry, first + cfg["max_keepawake"])
        if until > now:
            reasons.append(f"devprod-keepawake by {name} until {time.strftime('%H:%M UTC', time.gmtime(until))}")
    state["markers"] = seen  # forget markers that are gone
    running = sorted({comm for _, comm, _, _ in procs if comm in cfg["processes"]})
    reasons += [f"process {comm} is running" for comm in running]
    return reasons


def cpu(proc: str, state: dict, threshold: float) -> list:
    """Busy share of all CPUs since the previous run, from /proc/stat (iowait counts as idle)."""
    with open(os.path.join(proc, "stat")) as handle:
        fields = [int(v) for v in handle.readline().split()[1:9]]
    total, idle = sum(fields), fields[3] + fields[4]
    previous, state["cpu"] = state.get("cpu"), [total, idle]
    if not previous or total <= previous[0]:
        return ["CPU not measured yet"]
    busy = 100.0 * (1 - (idle - previous[1]) / (total - previous[0]))
    return [f"CPU {busy:.1f}% >= {threshold:g}%"] if busy >= threshold else []


def load_state(directory: str) -> dict:
    # Root-only: a developer who could write the countdown could stop or hold the box.
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise SystemExit(f"state directory {directory} must be a 0700 directory owned by uid {os.geteuid()}")
    try:
        with open(os.path.join(directory, "state.json")) as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return {}


def save_state(directory: str, state: dict) -> None:
    temporary = os.path.join(directory, "state.json.tmp")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump(state, handle)
    os.replace(temporary, os.path.join(directory, "state.json"))


def run(command_var: str, default: str, stdin: str | None = None) -> None:
    command = shlex.split(os.environ.get(command_var, default))
    result = subprocess.run(command, input=stdin, text=True, capture_output=True, timeout=30, check=False)
    if result.returncode != 0:
        log(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()[:200]}")


def main() -> int:
    cfg = settings()
    if cfg["idle"] <= 0:
        return 0
    now = float(os.environ.get("DEVPROD_NOW") or time.time())
    proc = os.environ.get("DEVPROD_PROC", "/proc")
    state_dir = os.environ.get("DEVPROD_STATE_DIR", "/run/devprod/idle-stop")
    state = load_state(state_dir)
    procs = list(processes(proc))
    reasons = sessions(procs, os.environ.get("DEVPROD_DEV", "/dev"), cfg["idle"], now)
    reasons += keepawake(os.environ.get("DEVPROD_KEEPAWAKE_DIR", "/run/devprod/keepawake"), state, cfg, procs, now)
    reasons += cpu(proc, state, cfg["cpu"])

    if reasons:
        if state.get("idle_since") is not None:
            log(f"awake again: {'; '.join(reasons)}")
        state.update(idle_since=None, warned=False)
        save_state(state_dir, state)
        return 0
    if state.get("idle_since") is None:
        log(f"idle: countdown of {cfg['idle'] // 60} minutes starts")
        state["idle_since"] = now
    left = state["idle_since"] + cfg["idle"] - now
    if left <= 0:
        state.update(idle_since=None, warned=False)
        save_state(state_dir, state)
        log("idle for the whole window: powering off (EC2 stops the instance)")
        run("DEVPROD_WALL", "wall", "devprod: this box is idle and stops now.\n")
        run("DEVPROD_POWEROFF", "systemctl poweroff")
        return 0
    if left <= cfg["warn"] and not state.get("warned"):
        minutes = max(1, int(round(left / 60)))
        log(f"warning terminals: idle stop in {minutes} minutes")
        run(
            "DEVPROD_WALL",
            "wall",
            f"devprod: this box has been idle and stops in {minutes} minutes.\n"
            "Press a key in this terminal, or run `devprod-keepawake 1h` to keep it up longer.\n",
        )
        state["warned"] = True
    save_state(state_dir, state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
