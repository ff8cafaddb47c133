"""Behind `devprod trace`, `devprod history` and the rollback picker: one commit's way to production.

Every function takes the clients it uses (devprod.aws.Clients or anything with
the same attributes) and returns plain data; `render_*` turn it into lines of
at most 80 columns that read well in a pipe. AWS errors surface as
devprod.aws.AwsProblem, through `doing()`.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from devprod import metrics
from devprod.aws import doing
from devprod.errors import BadInput
from devprod.ops import commit_of

UTC = timezone.utc
SHA = re.compile(r"^[0-9a-f]{7,40}$")
TERMINAL_ACTION = {"Succeeded", "Failed", "Abandoned"}
TERMINAL_EXECUTION = {"Succeeded", "Failed", "Stopped", "Superseded", "Cancelled"}
# deploy.sh's log lines, as the deploy document's CloudWatch output carries them:
# `current -> releases/<sha>` at the switch, `...; serving: <sha>` when a run ends.
SWITCH = re.compile(r"current -> releases/([0-9a-f]{7,40})")
SERVING = re.compile(r"serving: ([0-9a-f]{7,40})")
STREAM_INSTANCE = re.compile(r"^[^/]+/(i-[0-9a-f]{8,17})/")
WIDTH = 80
DEFAULT_SCAN = 50


def _utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


# ------------------------------------------------------------------ the data


@dataclass
class Step:
    """One pipeline action."""

    stage: str
    action: str
    status: str
    provider: str | None
    started: datetime | None
    ended: datetime | None
    external_id: str | None = None
    summary: str | None = None
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        return _seconds(self.started, self.ended)


@dataclass
class Stage:
    name: str
    status: str
    started: datetime | None
    ended: datetime | None
    steps: list[Step]

    @property
    def seconds(self) -> float | None:
        return _seconds(self.started, self.ended)


@dataclass
class Build:
    id: str
    status: str
    phase: str | None
    started: datetime | None
    ended: datetime | None

    @property
    def seconds(self) -> float | None:
        return _seconds(self.started, self.ended)


@dataclass
class HostResult:
    instance_id: str
    status: str
    started: datetime | None
    ended: datetime | None
    last_line: str = ""

    @property
    def seconds(self) -> float | None:
        return _seconds(self.started, self.ended)


@dataclass
class Command:
    id: str
    status: str
    requested: datetime | None
    action: str | None
    release: str | None
    hosts: list[HostResult]


@dataclass
class ExecutionInfo:
    id: str
    status: str
    commit: str | None
    trigger: str | None
    started: datetime | None
    ended: datetime | None  # the last update of a finished execution

    @property
    def seconds(self) -> float | None:
        return _seconds(self.started, self.ended)


@dataclass
class GitHubRun:
    checked: bool
    note: str
    name: str | None = None
    status: str | None = None
    conclusion: str | None = None
    url: str | None = None
    started: datetime | None = None
    ended: datetime | None = None
    commit_time: datetime | None = None


@dataclass
class Verdict:
    """`live`: the commit is what production serves (as far as the deploy log and health tell)."""

    live: bool
    stopped_at: str | None
    lead_time_seconds: float | None
    lead_time_from: str | None  # "commit" | "pipeline start" | None
    line: str


@dataclass
class Trace:
    asked: str
    commit: str | None
    pipeline: str
    execution: ExecutionInfo | None
    stages: list[Stage]
    builds: list[Build]
    command: Command | None
    serving: dict[str, str | None]  # instance id -> release it serves now (from the deploy log)
    health: Any  # devprod.ops.Health | None
    github: GitHubRun
    notes: list[str]
    verdict: Verdict | None = None

    @property
    def running(self) -> bool:
        return self.execution is not None and self.execution.status in ("InProgress", "Stopping")

    def to_json(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, datetime):
                return _iso(value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        data = plain(asdict(self))
        for key, items in (("stages", self.stages), ("builds", self.builds)):
            for item, out in zip(items, data[key]):
                out["seconds"] = item.seconds
        for stage, out in zip(self.stages, data["stages"]):
            for step, step_out in zip(stage.steps, out["steps"]):
                step_out["seconds"] = step.seconds
        if self.command:
            for host, out in zip(self.command.hosts, data["command"]["hosts"]):
                out["seconds"] = host.seconds
        if self.execution:
            data["execution"]["seconds"] = self.execution.seconds
        return data


# ------------------------------------------------------------------ AWS reads


def summaries(pipeline_client: Any, pipeline: str, limit: int) -> Iterable[dict[str, Any]]:
    """Execution summaries, newest first, across pages, at most `limit`."""
    with doing(f"listing executions of pipeline {pipeline}"):
        pages = pipeline_client.get_paginator("list_pipeline_executions").paginate(
            pipelineName=pipeline, PaginationConfig={"MaxItems": limit, "PageSize": min(limit, 100)}
        )
        count = 0
        for page in pages:
            for summary in page.get("pipelineExecutionSummaries", []):
                if count >= limit:
                    return
                count += 1
                yield summary


def _execution(summary: dict[str, Any], commit: str | None) -> ExecutionInfo:
    status = summary.get("status", "?")
    started = _utc(summary.get("startTime"))
    ended = _utc(summary.get("lastUpdateTime")) if status in TERMINAL_EXECUTION else None
    return ExecutionInfo(summary["pipelineExecutionId"], status, commit, (summary.get("trigger") or {}).get("triggerType"),
                         started, ended)


def find_execution(pipeline_client: Any, pipeline: str, sha: str, scan: int = DEFAULT_SCAN) -> ExecutionInfo | None:
    """The newest execution whose COMMIT_SHA starts with `sha` (or the newest one for 'latest')."""
    for summary in summaries(pipeline_client, pipeline, scan):
        commit = commit_of(pipeline_client, pipeline, summary["pipelineExecutionId"])
        if sha == "latest" or (commit and commit.startswith(sha)):
            return _execution(summary, commit)
    return None


def steps_of(pipeline_client: Any, pipeline: str, execution_id: str) -> list[Step]:
    with doing(f"listing actions of execution {execution_id} of {pipeline}"):
        pages = pipeline_client.get_paginator("list_action_executions").paginate(
            pipelineName=pipeline, filter={"pipelineExecutionId": execution_id}
        )
        details = [a for page in pages for a in page.get("actionExecutionDetails", [])]
    steps = []
    for a in details:
        result = (a.get("output") or {}).get("executionResult") or {}
        status = a.get("status", "?")
        steps.append(Step(
            stage=a.get("stageName", "?"), action=a.get("actionName", "?"), status=status,
            provider=((a.get("input") or {}).get("actionTypeId") or {}).get("provider"),
            started=_utc(a.get("startTime")),
            ended=_utc(a.get("lastUpdateTime")) if status in TERMINAL_ACTION else None,
            external_id=result.get("externalExecutionId"), summary=result.get("externalExecutionSummary"),
            variables=dict((a.get("output") or {}).get("outputVariables") or {}),
        ))
    return sorted(steps, key=lambda s: s.started or datetime.max.replace(tzinfo=UTC))


def stages_of(steps: list[Step]) -> list[Stage]:
    """Steps grouped by stage in the order they started; a stage is as bad as its worst action."""
    stages: dict[str, list[Step]] = {}
    for step in steps:
        stages.setdefault(step.stage, []).append(step)
    out = []
    for name, group in stages.items():
        statuses = {s.status for s in group}
        status = next((s for s in ("Failed", "Abandoned", "InProgress") if s in statuses), group[-1].status)
        done = all(s.status in TERMINAL_ACTION for s in group)
        starts = [s.started for s in group if s.started]
        ends = [s.ended for s in group if s.ended]
        out.append(Stage(name, status, min(starts) if starts else None, max(ends) if done and ends else None, group))
    return out


def builds_of(codebuild: Any, steps: list[Step]) -> list[Build]:
    ids = [s.external_id for s in steps if s.external_id and ":" in s.external_id and s.provider in (None, "CodeBuild")]
    if not ids:
        return []
    with doing(f"reading CodeBuild builds {', '.join(ids)}"):
        found = codebuild.batch_get_builds(ids=ids).get("builds", [])
    return [Build(b["id"], b.get("buildStatus", "?"), b.get("currentPhase"), _utc(b.get("startTime")),
                  _utc(b.get("endTime"))) for b in found]


def find_command(ssm: Any, document: str | None, commit: str | None, steps: list[Step],
                 after: datetime | None, limit: int = 50) -> str | None:
    """The deploy command of this execution: the Release action's COMMAND_ID output, else the newest
    deploy of `commit` by the deploy document sent after the execution started."""
    for step in steps:
        if step.variables.get("COMMAND_ID"):
            return step.variables["COMMAND_ID"]
    if not document or not commit:
        return None
    with doing(f"listing commands of document {document}"):
        pages = ssm.get_paginator("list_commands").paginate(
            Filters=[{"key": "DocumentName", "value": document}], PaginationConfig={"MaxItems": limit}
        )
        commands = [c for page in pages for c in page.get("Commands", [])]
    candidates = [
        c for c in commands
        if c.get("DocumentName") == document
        and (c.get("Parameters") or {}).get("release") == [commit]
        and (c.get("Parameters") or {}).get("action", ["deploy"]) == ["deploy"]
        and (after is None or (_utc(c.get("RequestedDateTime")) or after) >= after)
    ]
    candidates.sort(key=lambda c: _utc(c.get("RequestedDateTime")) or datetime.min.replace(tzinfo=UTC), reverse=True)
    return candidates[0]["CommandId"] if candidates else None


def command_detail(ssm: Any, command_id: str) -> Command:
    """The command and each instance's result and duration (ListCommands, ListCommandInvocations)."""
    with doing(f"reading command {command_id}"):
        listed = ssm.list_commands(CommandId=command_id).get("Commands", [])
        pages = ssm.get_paginator("list_command_invocations").paginate(CommandId=command_id, Details=True)
        invocations = [i for page in pages for i in page.get("CommandInvocations", [])]
    command = listed[0] if listed else {}
    hosts = []
    for inv in invocations:
        plugins = inv.get("CommandPlugins") or []
        started = _utc(plugins[0].get("ResponseStartDateTime")) if plugins else None
        ended = _utc(plugins[-1].get("ResponseFinishDateTime")) if plugins else None
        output = "\n".join((p.get("Output") or "") for p in plugins).strip()
        hosts.append(HostResult(inv.get("InstanceId", "?"), inv.get("Status", "?"),
                                started or _utc(inv.get("RequestedDateTime")), ended,
                                output.splitlines()[-1] if output else ""))
    params = command.get("Parameters") or {}
    return Command(command_id, command.get("Status", "?"), _utc(command.get("RequestedDateTime")),
                   (params.get("action") or [None])[0], (params.get("release") or [None])[0], hosts)


@dataclass
class Switch:
    """A deploy.sh run on one host that left it serving `release` at `at`."""

    at: datetime
    instance_id: str
    release: str
    command_id: str


def switches(logs: Any, group: str, streams: int = 50) -> list[Switch]:
    """Every release switch the deploy document's CloudWatch output records, oldest first.

    Streams are named <command id>/<instance id>/<plugin>/<stdout|stderr>. A run
    counts by its last `serving: <sha>` line, else its last `current -> releases/<sha>`.
    """
    found: list[Switch] = []
    with doing(f"reading deploy log group {group}"):
        listed = logs.describe_log_streams(logGroupName=group, orderBy="LastEventTime", descending=True,
                                           limit=min(streams, 50)).get("logStreams", [])
        for stream in listed:
            name = stream["logStreamName"]
            match = STREAM_INSTANCE.match(name)
            if not match:
                continue
            events = logs.get_log_events(logGroupName=group, logStreamName=name, startFromHead=True,
                                         limit=1000).get("events", [])
            last: tuple[int, str] | None = None
            for event in events:
                message = event.get("message", "")
                hit = SERVING.search(message) or SWITCH.search(message)
                if hit:
                    last = (event.get("timestamp", 0), hit.group(1))
            if last:
                at = datetime.fromtimestamp(last[0] / 1000, tz=UTC)
                found.append(Switch(at, match.group(1), last[1], name.split("/", 1)[0]))
    return sorted(found, key=lambda s: s.at)


def serving_now(found: list[Switch]) -> dict[str, str | None]:
    latest: dict[str, str | None] = {}
    for switch in found:  # oldest first: the last one per host wins
        latest[switch.instance_id] = switch.release
    return latest


# ------------------------------------------------------------------ GitHub (optional)


def github_run(repository: str | None, sha: str | None, token: str | None, *, api: str | None = None,
               timeout: float = 10.0) -> GitHubRun:
    """The Actions run for `sha` in `repository` and the commit's time, through GitHub's REST API.

    Only with a token: without one, say it was skipped (no anonymous calls,
    which are rate-limited and fail on private repositories).
    """
    if not token:
        return GitHubRun(False, "skipped: GITHUB_TOKEN is not set")
    if not repository or "/" not in repository:
        return GitHubRun(False, "skipped: the app repository is unknown (pass --repository OWNER/NAME)")
    if not sha or len(sha) < 7:
        return GitHubRun(False, "skipped: no commit to look up")
    base = (api or os.environ.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/")
    owner, name = repository.split("/", 1)
    path = f"/repos/{urllib.parse.quote(owner)}/{urllib.parse.quote(name)}"

    def get(url: str) -> Any:
        request = urllib.request.Request(url, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "devprod-cli"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read(2_000_000))

    try:
        commit = get(f"{base}{path}/commits/{urllib.parse.quote(sha)}")
        full = commit.get("sha") or sha
        runs = get(f"{base}{path}/actions/runs?head_sha={urllib.parse.quote(full)}&per_page=10").get("workflow_runs", [])
    except urllib.error.HTTPError as exc:
        return GitHubRun(True, f"GitHub answered HTTP {exc.code} for {repository}@{sha[:7]}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return GitHubRun(True, f"GitHub could not be asked: {getattr(exc, 'reason', exc)}")
    commit_time = _utc(((commit.get("commit") or {}).get("committer") or {}).get("date"))
    if not runs:
        return GitHubRun(True, f"no Actions run for {full[:7]}", commit_time=commit_time)
    run = runs[0]
    return GitHubRun(True, "ok", run.get("name"), run.get("status"), run.get("conclusion"), run.get("html_url"),
                     _utc(run.get("run_started_at") or run.get("created_at")),
                     _utc(run.get("updated_at")) if run.get("status") == "completed" else None, commit_time)


def github_subjects(repository: str | None, shas: Iterable[str], token: str | None, *, api: str | None = None,
                    timeout: float = 10.0) -> dict[str, str]:
    """{sha: first line of its commit message} from GitHub's REST API; empty without a token.

    A sha GitHub does not answer for is left out (the picker shows no subject).
    """
    if not token or not repository or "/" not in repository:
        return {}
    base = (api or os.environ.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/")
    owner, name = repository.split("/", 1)
    found: dict[str, str] = {}
    for sha in shas:
        url = f"{base}/repos/{urllib.parse.quote(owner)}/{urllib.parse.quote(name)}/commits/{urllib.parse.quote(sha)}"
        request = urllib.request.Request(url, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "devprod-cli"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                message = ((json.loads(response.read(2_000_000)).get("commit") or {}).get("message") or "")
        except (urllib.error.URLError, OSError, ValueError):
            continue
        if message.strip():
            found[sha] = message.strip().splitlines()[0]
    return found


# ------------------------------------------------------------------ the trace


def gather(
    clients: Any,
    pipeline: str,
    sha: str = "latest",
    *,
    document: str | None = None,
    log_group: str | None = None,
    health_url: str | None = None,
    repository: str | None = None,
    github_token: str | None = None,
    scan: int = DEFAULT_SCAN,
    health: Callable[[str], Any] | None = None,
    now: datetime | None = None,
) -> Trace:
    """Everything known about one commit's way to production; `sha` is 7-40 hex or 'latest'."""
    sha = sha.strip().lower()
    if sha != "latest" and not SHA.match(sha):
        raise BadInput(f"{sha!r} is not a git sha (7-40 hex characters) or 'latest'")
    now = now or datetime.now(UTC)
    notes: list[str] = []
    execution = find_execution(clients.codepipeline, pipeline, sha, scan)
    commit = execution.commit if execution else (None if sha == "latest" else sha)
    steps = steps_of(clients.codepipeline, pipeline, execution.id) if execution else []
    builds = builds_of(clients.codebuild, steps) if steps else []
    command = None
    if execution:
        command_id = find_command(clients.ssm, document, commit, steps, execution.started)
        if command_id:
            command = command_detail(clients.ssm, command_id)
        elif not document:
            notes.append("deploy command not looked up: the deploy document is unknown (--document)")
    found = switches(clients.logs, log_group) if log_group else []
    if not log_group:
        notes.append("releases per host unknown: the deploy log group is unknown")
    live_health = None
    if health_url:
        if health is None:
            from devprod import ops

            health = lambda url: ops.check_health(url, retries=1, timeout=3)  # noqa: E731
        live_health = health(health_url)
    trace = Trace(sha, commit, pipeline, execution, stages_of(steps), builds, command, serving_now(found),
                  live_health, github_run(repository, commit, github_token), notes)
    trace.verdict = verdict(trace, now, scan)
    return trace


def verdict(trace: Trace, now: datetime, scan: int = DEFAULT_SCAN) -> Verdict:
    """Live or not, where it stopped, and the lead time commit -> live."""
    commit = trace.commit
    short = (commit or trace.asked)[:7]
    served = {r for r in trace.serving.values() if r}
    if trace.health is not None and getattr(trace.health, "release", None):
        served.add(trace.health.release)
    serves_it = bool(commit) and any(r.startswith(commit[:7]) or commit.startswith(r) for r in served)  # type: ignore[index]
    execution = trace.execution
    if execution is None:
        where = f"no pipeline execution among the last {scan}"
        if serves_it:
            return Verdict(True, None, None, None, f"LIVE {short}, but not through the pipeline ({where})")
        run = trace.github
        if run.conclusion and run.conclusion != "success":
            room = WIDTH - len(f"NOT LIVE {short}: stopped in GitHub Actions (: {run.conclusion})")
            name = run.name or "run"
            name = name if len(name) <= room else name[: max(room - 1, 1)] + "…"
            return Verdict(False, "GitHub Actions", None, None,
                           _fit(f"NOT LIVE {short}: stopped in GitHub Actions ({name}: {run.conclusion})"))
        if run.status and run.status != "completed":
            return Verdict(False, "GitHub Actions", None, None,
                           _fit(f"NOT LIVE {short}: GitHub Actions still {run.status.replace('_', ' ')} ({run.name or 'run'})"))
        return Verdict(False, "never deployed", None, None, f"NOT LIVE {short}: never deployed ({where})")
    lead, basis = None, None
    if execution.status == "Succeeded" and execution.ended:
        if trace.github.commit_time:
            lead, basis = _seconds(trace.github.commit_time, execution.ended), "commit"
        else:
            lead, basis = execution.seconds, "pipeline start"
    lead_text = f"lead time {metrics.short_duration(lead)}" + (
        " (commit->live)" if basis == "commit" else " (pipeline->live)" if basis else "")
    if execution.status == "Succeeded":
        if served and not serves_it:
            others = sorted(r[:7] for r in served)
            now_serving = others[0] + (f" +{len(others) - 1}" if len(others) > 1 else "")
            return Verdict(False, "replaced since", lead, basis,
                           f"NOT LIVE NOW {short}: replaced by {now_serving}; {lead_text}")
        if trace.health is not None and not trace.health.healthy:
            return Verdict(True, None, lead, basis, f"LIVE {short} but UNHEALTHY now; {lead_text}")
        return Verdict(True, None, lead, basis, f"LIVE {short}; {lead_text}")
    failed = _failed_step(trace)
    if trace.running:
        at = next((f"{s.stage}/{s.action}" for s in reversed([x for st in trace.stages for x in st.steps])
                   if s.status == "InProgress"), "starting")
        took = metrics.short_duration(_seconds(execution.started, now))
        return Verdict(False, at, None, None, f"IN PROGRESS {short}: at {at}, {took} so far")
    where = failed or execution.status.lower()
    hosts = ""
    if trace.command and trace.command.hosts:
        bad = [h for h in trace.command.hosts if h.status != "Success"]
        if bad:
            hosts = f", {len(bad)} of {len(trace.command.hosts)} hosts failed"
    line = f"NOT LIVE {short}: {execution.status.lower()} at {where}{hosts}"
    if len(line) > WIDTH and "/" in where:  # the stage alone still says where it stopped
        line = f"NOT LIVE {short}: {execution.status.lower()} at {where.split('/')[0]}{hosts}"
    return Verdict(False, where, None, None, _fit(line))


def _failed_step(trace: Trace) -> str | None:
    for stage in trace.stages:
        for step in stage.steps:
            if step.status in ("Failed", "Abandoned"):
                return f"{step.stage}/{step.action}"
    return None


# ------------------------------------------------------------------ rendering


def _clock(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%H:%M:%S") if value else "-"


def _fit(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def _row(name: str, status: str, start: str, end: str, took: str) -> str:
    """A timing row: name (cut to 24), status, start, end, duration; 67 columns."""
    name = name if len(name) <= 24 else name[:23] + "…"
    return f"{name:<24} {status[:12]:<12} {start:>9} {end:>9} {took:>8}".rstrip()


def render_trace(trace: Trace) -> list[str]:
    """The trace as plain lines of at most 80 columns; the last line is the verdict."""
    e = trace.execution
    lines = [f"commit {trace.commit or trace.asked} (pipeline {trace.pipeline})"]
    g = trace.github
    if g.name:
        result = g.conclusion or g.status or "?"
        lines.append(f"github   {g.name}: {result}, {_clock(g.started)}-{_clock(g.ended)}")
        if g.url:
            lines.append(f"         {g.url}")
    else:
        lines.append(f"github   {g.note}")
    if g.commit_time:
        lines.append(f"         committed {g.commit_time:%Y-%m-%d %H:%M:%S} UTC")
    if e is None:
        lines.append("pipeline no execution for this commit")
    else:
        day = f"{e.started:%Y-%m-%d} " if e.started else ""
        lines.append(f"pipeline {e.id} {e.status}")
        trigger = TRIGGERS.get(e.trigger or "", e.trigger or "?")
        lines.append(f"         {day}{_clock(e.started)}-{_clock(e.ended)} UTC, took "
                     f"{metrics.short_duration(e.seconds)}, trigger {trigger}")
    lines += _pipeline_lines(trace)
    lines.append("now")
    for instance, release in sorted(trace.serving.items()):
        lines.append(f"  {instance:<20} serves {(release or '?')[:12]}")
    h = trace.health
    if h is not None:
        if h.healthy:
            slot = f", slot {h.slot}" if getattr(h, "slot", None) else ""
            lines.append(f"  health  HTTP {h.status} in {h.latency_ms} ms, release {(h.release or '?')[:12]}{slot}")
        else:
            lines.append(f"  health  UNHEALTHY: {h.error}")
        lines.append(f"          {h.url}")
    elif not trace.serving:
        lines.append("  unknown: no health URL and no deploy log known")
    for note in trace.notes:
        lines.append(f"note: {note}")
    out = [_fit(line) for line in lines]
    out.append(_fit(trace.verdict.line if trace.verdict else "?"))
    return out


def _pipeline_lines(trace: Trace) -> list[str]:
    """Stages and actions, builds and the deploy command of the traced execution."""
    e, lines = trace.execution, []
    if trace.stages:
        lines.append(_row("stages (UTC)", "", "start", "end", "took"))
        for stage in trace.stages:
            lines.append(_row(f"  {stage.name}", stage.status, _clock(stage.started), _clock(stage.ended),
                              metrics.short_duration(stage.seconds)))
            for step in stage.steps:
                lines.append(_row(f"    {step.action}", step.status, _clock(step.started), _clock(step.ended),
                                  metrics.short_duration(step.seconds)))
                if step.summary and step.status in ("Failed", "Abandoned"):
                    lines.append(f"      {step.summary}")
    for build in trace.builds:
        lines.append(f"build    {build.id}")
        lines.append(f"         {build.status}, phase {build.phase or '?'}, took {metrics.short_duration(build.seconds)}")
    if trace.command:
        c = trace.command
        lines.append(f"deploy   SSM {c.id} {c.status}")
        for host in c.hosts:
            lines.append(_row(f"  {host.instance_id}", host.status, _clock(host.started), _clock(host.ended),
                              metrics.short_duration(host.seconds)))
            if host.last_line and host.status != "Success":
                lines.append(f"    {host.last_line}")
    elif e is not None:
        lines.append("deploy   no deploy command found for this execution")
    return lines


# ------------------------------------------------------------------ history


@dataclass
class History:
    pipeline: str
    runs: list[metrics.Run]
    metrics: metrics.Metrics
    shown: int

    def to_json(self) -> dict[str, Any]:
        m = self.metrics

        def sec(v: timedelta | None) -> float | None:
            return v.total_seconds() if v is not None else None

        return {
            "pipeline": self.pipeline,
            "executions": [{
                "id": r.id, "commit": r.commit, "status": r.status, "trigger": r.trigger,
                "started": _iso(r.started), "ended": _iso(r.ended),
                "seconds": r.duration.total_seconds() if r.duration else None,
                "failedStage": r.failed_stage, "rolledBackAt": _iso(r.rolled_back_at),
            } for r in self.runs[: self.shown]],
            "metrics": {
                "since": _iso(m.since), "until": _iso(m.until), "runs": m.runs, "deploys": m.deploys,
                "liveDeploys": m.live_deploys, "failures": m.failures, "deploysPerWeek": m.deploys_per_week,
                "medianLeadTimeSeconds": sec(m.median_lead_time), "leadTimeBasis": m.lead_time_basis,
                "changeFailureRate": m.change_failure_rate,
                "medianTimeToRestoreSeconds": sec(m.median_time_to_restore),
                "restores": m.restores, "unrestored": m.unrestored, "notes": m.notes, "how": metrics.HOW,
            },
        }


def rollbacks(ssm: Any, document: str, limit: int = 200) -> list[datetime]:
    """When each successful `rollback` run of the deploy document was requested, oldest first."""
    with doing(f"listing commands of document {document}"):
        pages = ssm.get_paginator("list_commands").paginate(
            Filters=[{"key": "DocumentName", "value": document}], PaginationConfig={"MaxItems": limit}
        )
        commands = [c for page in pages for c in page.get("Commands", [])]
    times = [_utc(c.get("RequestedDateTime")) for c in commands
             if c.get("DocumentName") == document and (c.get("Parameters") or {}).get("action") == ["rollback"]
             and c.get("Status") == "Success"]
    return sorted(t for t in times if t)


def history(clients: Any, pipeline: str, count: int = 10, days: int = 28, *, document: str | None = None,
            now: datetime | None = None, limit: int = 500) -> History:
    """The last `count` executions, and metrics over the executions of the last `days` days.

    Executions are read newest first until one started before the window (at
    most `limit`). Failed ones get their failed stage (ListActionExecutions).
    A successful rollback of the deploy document marks the newest release that
    went live before it as rolled back. Lead time runs from pipeline start:
    commit times need GitHub, which `devprod trace` asks.
    """
    if count < 1 or days < 1:
        raise BadInput("--count and --days must be at least 1")
    now = now or datetime.now(UTC)
    since = now - timedelta(days=days)
    runs: list[metrics.Run] = []
    for summary in summaries(clients.codepipeline, pipeline, limit):
        info = _execution(summary, None)
        if len(runs) >= count and info.started and info.started < since:
            break
        failed_stage = None
        if info.status == "Failed":
            failed_stage = _failed_stage(steps_of(clients.codepipeline, pipeline, info.id))
        runs.append(metrics.Run(info.id, commit_of(clients.codepipeline, pipeline, info.id), info.status,
                                info.trigger, info.started, info.ended, None, failed_stage))
    if document:
        runs = mark_rollbacks(runs, rollbacks(clients.ssm, document))
    return History(pipeline, runs, metrics.compute(runs, now, days), min(count, len(runs)))


def _failed_stage(steps: list[Step]) -> str | None:
    return next((s.stage for s in steps if s.status in ("Failed", "Abandoned")), None)


def mark_rollbacks(runs: list[metrics.Run], times: list[datetime]) -> list[metrics.Run]:
    """Each rollback marks the newest release live before it (and not rolled back already)."""
    from dataclasses import replace

    marked = {r.id: r for r in runs}
    for at in times:
        live = [r for r in marked.values() if r.live and r.ended and r.ended <= at and r.rolled_back_at is None]
        if live:
            newest = max(live, key=lambda r: r.ended)  # type: ignore[arg-type, return-value]
            marked[newest.id] = replace(newest, rolled_back_at=at)
    return [marked[r.id] for r in runs]


TRIGGERS = {"StartPipelineExecution": "start API", "Webhook": "webhook", "WebhookV2": "webhook",
            "CloudWatchEvent": "event", "PutActionRevision": "revision", "CreatePipeline": "create",
            "PollForSourceChanges": "poll", "ManualRollback": "rollback", "AutomatedRollback": "auto-rollback"}


def render_history(h: History) -> list[str]:
    lines = [f"last {h.shown} executions of {h.pipeline} (newest first, UTC)",
             f"{'started':<16}  {'commit':<7} {'result':<10} {'took':>7}  {'trigger':<9} note"]
    for r in h.runs[: h.shown]:
        note = ""
        if r.rolled_back_at:
            note = f"rolled back {r.rolled_back_at:%m-%d %H:%M}"
        elif r.failed_stage:
            note = f"at {r.failed_stage}"
        started = f"{r.started:%Y-%m-%d %H:%M}" if r.started else "-"
        took = metrics.short_duration(r.duration)
        trigger = TRIGGERS.get(r.trigger or "", (r.trigger or "?")[:9])
        lines.append(_fit(f"{started:<16}  {(r.commit or '?')[:7]:<7} {r.status[:10]:<10} {took:>7}  {trigger:<9} {note}".rstrip()))
    if not h.runs:
        lines.append("(no executions)")
    lines.append("")
    lines.extend(_fit(line) for line in metrics.describe(h.metrics))
    return lines


# ------------------------------------------------------------------ rollback picker


@dataclass
class Choice:
    release: str
    deployed: datetime
    live_for: timedelta | None  # until the next switch; None while it is live
    subject: str | None
    current: bool
    preselected: bool


def release_choices(found: list[Switch], now: datetime, *, instance_id: str | None = None, keep: int | None = None,
                    subjects: dict[str, str] | None = None) -> list[Choice]:
    """The releases a host went through, newest first, one entry per release (its latest deploy).

    `found` are the host's switches (see `switches`); with several hosts, pass
    `instance_id` (default: the host with the newest switch). `live_for` is
    how long it served until the next switch. The live release is `current`;
    the one before it is `preselected` (what `rollback` goes back to). `keep`
    limits the list to the releases deploy.sh keeps on disk (keepReleases).
    """
    if instance_id is None and found:
        instance_id = max(found, key=lambda s: s.at).instance_id
    own = sorted((s for s in found if s.instance_id == instance_id), key=lambda s: s.at)
    if not own:
        return []
    spans: list[tuple[Switch, timedelta | None]] = []
    for index, switch in enumerate(own):
        following = own[index + 1].at if index + 1 < len(own) else None
        spans.append((switch, following - switch.at if following else None))
    current = own[-1].release
    choices: list[Choice] = []
    seen: set[str] = set()
    for switch, live_for in reversed(spans):
        if switch.release in seen:
            continue
        seen.add(switch.release)
        choices.append(Choice(switch.release, switch.at, live_for, (subjects or {}).get(switch.release),
                              switch.release == current, False))
    if keep is not None:
        choices = choices[:keep]
    previous = next((c for c in choices if not c.current), None)
    if previous:
        previous.preselected = True
    return choices


def rollback_choices(clients: Any, log_group: str, *, now: datetime | None = None, instance_id: str | None = None,
                     keep: int | None = None, repository: str | None = None,
                     github_token: str | None = None) -> list[Choice]:
    """The picker's list for `devprod rollback` without --to: the deploy log's switches of one host,
    with commit subjects from GitHub when a token is given."""
    now = now or datetime.now(UTC)
    choices = release_choices(switches(clients.logs, log_group), now, instance_id=instance_id, keep=keep)
    subjects = github_subjects(repository, [c.release for c in choices], github_token)
    for choice in choices:
        choice.subject = subjects.get(choice.release)
    return choices


def render_choices(choices: list[Choice], now: datetime) -> list[str]:
    """A numbered list for the picker: '>' marks the preselected release, '*' the live one."""
    if not choices:
        return ["no releases recorded in the deploy log"]
    lines = ["   #  release  deployed (UTC)    live for  subject"]
    for index, c in enumerate(choices, 1):
        mark = ">" if c.preselected else "*" if c.current else " "
        live = "now" if c.current else metrics.short_duration(c.live_for)
        lines.append(_fit(f"{mark} {index:>2}  {c.release[:7]:<7}  {c.deployed:%Y-%m-%d %H:%M}  {live:>8}  "
                          f"{c.subject or ''}".rstrip()))
    lines.append("> previous release (preselected), * live now")
    return lines
