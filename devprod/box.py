"""A developer's own box from their laptop: status, start, stop, and start-on-connect for ssh.

`ssh NAME-dev` runs `devprod box connect` as its ProxyCommand: it starts a
stopped box, waits until EC2 says running and the SSM agent is Online, then
becomes `aws ssm start-session` (AWS-StartSSHSession), whose stdin/stdout are
ssh's tunnel. Progress therefore goes to stderr only, which ssh shows.
Functions take their clients and return plain data; the CLI renders it.
"""

from __future__ import annotations

import getpass
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from botocore.exceptions import WaiterError

from devprod.aws import AwsProblem, doing
from devprod.contracts import DEVELOPER_ROLE, DEVELOPER_TAG, ROLE_TAG, STACK_TAG
from devprod.errors import BadInput, OperationFailed, TimedOut

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,20}$")
INSTANCE_ID_PATTERN = re.compile(r"^i-[0-9a-f]{8,17}$")
DEVELOPER_ENV = "DEVPROD_DEVELOPER"
# States from which a box comes up by itself or after StartInstances.
STARTABLE = ("stopped",)
ON_ITS_WAY = ("pending",)
GOING_DOWN = ("stopping",)
GONE = ("shutting-down", "terminated")
ONLINE = "Online"
# What SSM reports for an instance it has never heard from (or not since its start).
NOT_REGISTERED = "not registered"


def default_developer(env: Mapping[str, str] = os.environ, user: Callable[[], str] = getpass.getuser) -> tuple[str, str]:
    """(name, where it came from): DEVPROD_DEVELOPER, else the local user name."""
    if env.get(DEVELOPER_ENV):
        return env[DEVELOPER_ENV], DEVELOPER_ENV
    try:
        return user(), "the local user name"
    except (KeyError, OSError):  # no passwd entry (some containers)
        raise BadInput(f"no developer name: pass NAME or set {DEVELOPER_ENV}") from None


def check_name(name: str, source: str) -> str:
    if not NAME_PATTERN.match(name):
        raise BadInput(f"{source} {name!r} is not a developer name (2-21 lowercase letters, digits, '-'); "
                       f"pass NAME or set {DEVELOPER_ENV}")
    return name


def check_instance_id(value: str, source: str = "--instance-id") -> str:
    if not INSTANCE_ID_PATTERN.match(value):
        raise BadInput(f"{source} {value!r} is not an EC2 instance id (i- and 8 or 17 hex digits)")
    return value


@dataclass
class Box:
    developer: str
    instance_id: str
    state: str
    instance_type: str | None
    ping: str
    launched: str | None
    uptime_seconds: int | None

    def to_json(self) -> dict[str, Any]:
        return {"developer": self.developer, "instanceId": self.instance_id, "state": self.state,
                "instanceType": self.instance_type, "ssmPingStatus": self.ping, "launched": self.launched,
                "uptimeSeconds": self.uptime_seconds}


def _developer_filters(name: str, stack: str | None) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{DEVELOPER_TAG}", "Values": [name]},
               {"Name": f"tag:{ROLE_TAG}", "Values": [DEVELOPER_ROLE]},
               {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    if stack:
        filters.append({"Name": f"tag:{STACK_TAG}", "Values": [stack]})
    return filters


def describe(ec2: Any, name: str, instance_id: str | None = None, stack: str | None = None) -> dict[str, Any]:
    """The box's EC2 description: by id when known, else by its developer tag (and stack)."""
    what = f"reading {name}'s box" + (f" {instance_id}" if instance_id else "")
    with doing(what):
        if instance_id:
            pages = ec2.get_paginator("describe_instances").paginate(InstanceIds=[instance_id])
        else:
            pages = ec2.get_paginator("describe_instances").paginate(Filters=_developer_filters(name, stack))
        found = [i for page in pages for r in page.get("Reservations", []) for i in r.get("Instances", [])]
    if not found:
        where = f"instance {instance_id}" if instance_id else f"no instance tagged {DEVELOPER_TAG}={name}"
        raise BadInput(f"{where}: no such box (pass --instance-id, or check NAME and --stack)")
    if len(found) > 1:
        ids = ", ".join(i["InstanceId"] for i in found)
        raise BadInput(f"{name} has {len(found)} boxes ({ids}); pass --instance-id or --stack")
    return found[0]


def ping_status(ssm: Any, instance_id: str) -> str:
    """The SSM agent's PingStatus (Online, ConnectionLost, Inactive) or 'not registered'."""
    with doing(f"asking SSM about the agent on {instance_id}"):
        answer = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])
    found = answer.get("InstanceInformationList") or []
    return found[0].get("PingStatus", NOT_REGISTERED) if found else NOT_REGISTERED


def box_of(ec2: Any, ssm: Any, name: str, instance_id: str | None = None, stack: str | None = None,
           now: datetime | None = None) -> Box:
    instance = describe(ec2, name, instance_id, stack)
    state = instance["State"]["Name"]
    launched = instance.get("LaunchTime")
    uptime = None
    if state == "running" and isinstance(launched, datetime):
        uptime = max(0, int(((now or datetime.now(timezone.utc)) - launched).total_seconds()))
    return Box(name, instance["InstanceId"], state, instance.get("InstanceType"),
               ping_status(ssm, instance["InstanceId"]) if state == "running" else "-",
               launched.isoformat() if isinstance(launched, datetime) else None, uptime)


def stop(ec2: Any, name: str, instance_id: str, *, wait: bool = False, timeout: float = 600, poll: float = 5) -> str:
    """Stop the box; returns the state EC2 reported (or 'stopped' after --wait)."""
    with doing(f"stopping {name}'s box {instance_id}"):
        answer = ec2.stop_instances(InstanceIds=[instance_id])
    state = answer["StoppingInstances"][0]["CurrentState"]["Name"]
    if wait:
        _wait(ec2, "instance_stopped", name, instance_id, timeout, poll)
        state = "stopped"
    return state


def _wait(ec2: Any, waiter: str, name: str, instance_id: str, timeout: float, poll: float,
          total: float | None = None) -> None:
    """A botocore waiter bounded by `timeout` seconds (what is left of `total`, the --timeout given);
    its failures become devprod's one-line errors."""
    delay = max(poll, 0.01)
    attempts = max(1, int(timeout // delay) + 1)
    try:
        ec2.get_waiter(waiter).wait(InstanceIds=[instance_id], WaiterConfig={"Delay": delay, "MaxAttempts": attempts})
    except WaiterError as exc:
        error = (exc.last_response or {}).get("Error")
        if error:  # the describe call itself was refused or failed
            raise AwsProblem(f"waiting for {name}'s box {instance_id}: AWS answered {error.get('Code')}: "
                             f"{error.get('Message', '').strip()}") from None
        if "Max attempts exceeded" in str(exc):
            raise TimedOut(f"{name}'s box {instance_id} not {waiter.split('_', 1)[1]} after {total or timeout:g}s "
                           "(--timeout)") from None
        raise OperationFailed(f"{name}'s box {instance_id} cannot become {waiter.split('_', 1)[1]}: "
                              f"{exc.kwargs.get('reason', exc)}") from None


@dataclass(frozen=True)
class Waiting:
    """How long start-on-connect waits, in total, and how often it asks."""

    timeout: float = 300.0
    poll: float = 5.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def ensure_running(ec2: Any, ssm: Any, name: str, instance_id: str, waiting: Waiting,
                   say: Callable[[str], None]) -> bool:
    """Start the box when needed and wait for EC2 running and the SSM agent Online; True when it was started.

    One deadline covers everything: a stopping box is first waited down, then
    started, then waited up.
    """
    deadline = waiting.clock() + waiting.timeout
    left = lambda: max(0.0, deadline - waiting.clock())  # noqa: E731
    state = describe(ec2, name, instance_id)["State"]["Name"]
    if state in GONE:
        raise OperationFailed(f"{name}'s box {instance_id} is {state}; it cannot be started")
    started = False
    if state in GOING_DOWN:
        say(f"{name}'s box {instance_id} is stopping; waiting for it to stop before starting it")
        _wait(ec2, "instance_stopped", name, instance_id, left(), waiting.poll, waiting.timeout)
        state = "stopped"
    if state in STARTABLE:
        say(f"starting {name}'s box {instance_id} (EC2 usually takes 30-90 s)")
        with doing(f"starting {name}'s box {instance_id}"):
            ec2.start_instances(InstanceIds=[instance_id])
        started = True
    if state != "running" or started:
        _wait(ec2, "instance_running", name, instance_id, left(), waiting.poll, waiting.timeout)
        say(f"{instance_id} is running; waiting for its SSM agent")
    _wait_online(ssm, name, instance_id, waiting, deadline, say)
    return started


def _wait_online(ssm: Any, name: str, instance_id: str, waiting: Waiting, deadline: float,
                 say: Callable[[str], None]) -> None:
    last = None
    while True:
        ping = ping_status(ssm, instance_id)
        if ping == ONLINE:
            if last is not None:
                say(f"{instance_id}: SSM agent {ONLINE}")
            return
        if ping != last:
            say(f"{instance_id}: SSM agent {ping}")
            last = ping
        if waiting.clock() >= deadline:
            raise TimedOut(f"{name}'s box {instance_id}: SSM agent still {ping} after {waiting.timeout:g}s "
                           "(--timeout); the box runs, try again in a minute")
        waiting.sleep(min(waiting.poll, max(0.0, deadline - waiting.clock())))


def session_command(instance_id: str, port: int, region: str | None) -> list[str]:
    """The AWS CLI call that carries ssh over SSM (what the ssh config ran before start-on-connect)."""
    argv = ["aws", "ssm", "start-session", "--target", instance_id, "--document-name", "AWS-StartSSHSession",
            "--parameters", f"portNumber={port}"]
    return argv + (["--region", region] if region else [])


def uptime_text(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    hours, rest = divmod(seconds, 3600)
    days, hours = divmod(hours, 24)
    return (f"{days}d" if days else "") + f"{hours}h{rest // 60:02d}m"
