#!/usr/bin/env python3
"""Publishes a production host's proxy metrics to CloudWatch, once a minute.

Run by a systemd timer on each production host:
  devprod-proxy-metrics.py --stack STACK --log /var/log/nginx/devprod-access.log
      --health-url http://127.0.0.1:PORT/HEALTHPATH
      --state /var/lib/devprod/proxy-metrics.json [--region R] [--endpoint-url URL]

It counts the requests and the 5xx answers nginx logged since the last run
(format devprod_proxy, written by scripts/deploy.sh), probes the health URL
through nginx once, and sends three datapoints with the dimension
{"Stack": STACK} only, so every host of a stack adds into one series:
  Requests, ServerErrors, UnhealthyHosts (1 when this host's probe failed).

The state file holds the log's inode and the offset read up to. A rotated log
(new inode) is finished from LOG.1 when that is the old file, then read from
0; a truncated log is read from 0; a partial last line waits for the next run.
The state advances only after CloudWatch accepted the datapoints, so a failed
publish loses no counts: the next run sends them.

Exit codes: 0 published, 1 could not read the log, save the state or publish,
2 bad arguments, 70 a bug. Every error is one line on stderr.
It runs as root: only root reaches the instance metadata service (S23), which
holds the role's credentials for PutMetricData.
Self-contained (python3 standard library + boto3), Python 3.9 compatible:
AL2023's system python. It cannot import the devprod package, so the names
below are copies of devprod/contracts.py's (a test holds them equal).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request

PROXY_METRICS_NAMESPACE = "devprod/Proxy"
PROXY_REQUESTS = "Requests"
PROXY_SERVER_ERRORS = "ServerErrors"
PROXY_UNHEALTHY = "UnhealthyHosts"

HEALTH_TIMEOUT = 5
# The probe names itself so that its own request, logged by nginx, is not
# counted as traffic; only when it came from this host (a client cannot
# spoof the loopback source address through the load balancer).
PROBE_AGENT = "devprod-proxy-metrics"
# $remote_addr [$time_iso8601] "$request" $status $body_bytes_sent ...
# nginx escapes a double quote inside $request as \x22, so "[^"]*" holds.
LINE = re.compile(rb'^(\S+) \[[^\]]*\] "[^"]*" (\d{3}) \d+ .*"([^"]*)"$')
STACK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Failed(Exception):
    """One line for stderr; the exit code."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints a usage block; the house style is one line
        raise Failed(f"bad arguments: {message}", 2)


def arguments(argv: list) -> argparse.Namespace:
    parser = Parser(prog="devprod-proxy-metrics")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--health-url", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--region")
    parser.add_argument("--endpoint-url")
    args = parser.parse_args(argv)
    if not STACK.match(args.stack):
        raise Failed(f"bad arguments: --stack {args.stack!r} is not a stack name", 2)
    if not args.health_url.startswith("http://"):
        # urllib would also open file:// and ftp:// URLs; the probe is nginx on this host.
        raise Failed(f"bad arguments: --health-url {args.health_url!r} must be an http:// URL", 2)
    return args


def load_state(path: str) -> dict | None:
    """The saved {"inode", "offset"}; None when there is none or it is unreadable."""
    try:
        with open(path) as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        print(f"devprod-proxy-metrics: ignoring unreadable state {path}: {exc}", file=sys.stderr)
        return None
    if isinstance(state, dict) and all(isinstance(state.get(k), int) for k in ("inode", "offset")):
        return state
    print(f"devprod-proxy-metrics: ignoring state {path}: not {{inode, offset}}", file=sys.stderr)
    return None


def save_state(path: str, state: dict) -> None:
    """Write-then-rename, so a crash mid-write leaves the old state, never half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".proxy-metrics.")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(state, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def count(path: str, offset: int, counts: dict) -> int:
    """Adds the complete lines from offset on into counts; returns the offset after the
    last complete line (a partial line is left for the next run)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        for line in handle:
            if not line.endswith(b"\n"):
                break
            offset += len(line)
            match = LINE.match(line.rstrip(b"\r\n"))
            if match is None:
                counts["malformed"] += 1
                continue
            source, status, agent = match.groups()
            if agent == PROBE_AGENT.encode() and source in (b"127.0.0.1", b"::1"):
                continue
            counts["requests"] += 1
            counts["errors"] += status.startswith(b"5")
    return offset


def read_log(path: str, state: dict | None) -> tuple:
    """(counts, new state) for the lines logged since state."""
    counts = {"requests": 0, "errors": 0, "malformed": 0}
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return counts, state  # nginx not started yet: nothing logged, nothing to move
    inode, size = found.st_ino, found.st_size
    if state is None:
        # First run: what was logged before the metrics existed is not this minute's traffic.
        return counts, {"inode": inode, "offset": size}
    if state["inode"] != inode:
        rotated = path + ".1"
        try:
            if os.stat(rotated).st_ino == state["inode"]:
                count(rotated, state["offset"], counts)  # finish the old file first
        except FileNotFoundError:
            pass
        offset = 0
    else:
        offset = state["offset"] if state["offset"] <= size else 0  # shorter: truncated
    return counts, {"inode": inode, "offset": count(path, offset, counts)}


def unhealthy(url: str) -> int:
    """1 unless the health URL answers 2xx within HEALTH_TIMEOUT (redirects not followed)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    # No proxy handler: http_proxy in the environment must not divert a loopback probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    request = urllib.request.Request(url, headers={"User-Agent": PROBE_AGENT})
    try:
        with opener.open(request, timeout=HEALTH_TIMEOUT) as response:
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError, ValueError):
        return 1


def publish(args: argparse.Namespace, counts: dict, down: int) -> None:
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise Failed("boto3 is not installed (dnf install python3-boto3)")
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10)
    client = boto3.client("cloudwatch", region_name=args.region, endpoint_url=args.endpoint_url, config=config)
    dimensions = [{"Name": "Stack", "Value": args.stack}]
    values = ((PROXY_REQUESTS, counts["requests"]), (PROXY_SERVER_ERRORS, counts["errors"]), (PROXY_UNHEALTHY, down))
    try:
        # One namespace per stack (devprod.contracts.proxy_metrics_namespace): IAM lets a host
        # publish only there, so it cannot set off another stack's alarms.
        client.put_metric_data(Namespace=f"{PROXY_METRICS_NAMESPACE}/{args.stack}", MetricData=[
            {"MetricName": name, "Dimensions": dimensions, "Value": float(value), "Unit": "Count"}
            for name, value in values])
    except (BotoCoreError, ClientError) as exc:  # BotoCoreError covers no credentials and no connection
        raise Failed(f"publishing to CloudWatch failed ({type(exc).__name__}): {exc}".replace("\n", " "))


def main(argv: list) -> int:
    try:
        args = arguments(argv)
        state = load_state(args.state)
        try:
            counts, new_state = read_log(args.log, state)
        except OSError as exc:
            raise Failed(f"cannot read {args.log}: {exc.strerror or exc}")
        down = unhealthy(args.health_url)
        publish(args, counts, down)
        if new_state is not None and new_state != state:
            try:
                save_state(args.state, new_state)
            except OSError as exc:
                raise Failed(f"published, but cannot save {args.state}: {exc.strerror or exc}")
    except Failed as exc:
        print(f"devprod-proxy-metrics: {exc}", file=sys.stderr)
        return exc.code
    except Exception as exc:  # a bug: still one line in the journal, and a code that says so
        print(f"devprod-proxy-metrics: unexpected error, a bug ({type(exc).__name__}): {exc}", file=sys.stderr)
        return 70
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} devprod-proxy-metrics: {args.stack} requests={counts['requests']} "
          f"5xx={counts['errors']} unhealthy={down} malformed={counts['malformed']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
