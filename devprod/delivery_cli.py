"""`devprod trace`, `history`, `freeze` and `unfreeze`, and the rollback picker's prompt; `register(app)` adds the commands.

They follow the operator commands in cli.py: names from flags, DEVPROD_*
variables or stack outputs (devprod.outputs), clients from devprod.aws.Clients,
failures as devprod.errors types shown as one line with their exit code.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from devprod.errors import EXIT_FAILED, BadInput, DevprodError, TimedOut

TRACE_HELP = """Follow one commit from GitHub to production: is it live, and if not, where did it stop?

Shows the GitHub Actions run (only when GITHUB_TOKEN is set), the pipeline
execution whose COMMIT_SHA is the commit, each stage and action with start,
end and duration, the CodeBuild builds, the SSM deploy command with each
host's result, the release each host serves now and health now. The last line
says live or not, where it stopped, and the lead time from commit (or, without
GitHub, from pipeline start) to live.

\b
Exit codes:
  0  the commit is live (and production healthy, when a health URL is known)
  1  not live: failed, stopped, still running, replaced since, never
     deployed; or live but production is unhealthy now
  2  bad input (not a sha, names unknown)
  3  AWS could not be asked
  4  --watch gave up (--max-wait)
"""

HISTORY_HELP = """The last pipeline executions and delivery metrics over a window.

\b
How each figure is computed (runs that ended in the last --days days):
  deploys per week        releases that went live (Succeeded) / (days / 7)
  median lead time        pipeline start -> live (commit times need GitHub:
                          `devprod trace` shows commit -> live)
  change-failure rate     failed or rolled-back deploys / deploys; a deploy
                          went live or failed in the Release stage (failing
                          tests are the pipeline working, not a failed deploy)
  median time to restore  first failed or rolled-back deploy -> the next good
                          release (or the rollback), per outage
A rollback is a successful `rollback` run of the deploy document; it marks the
release that was live before it.

\b
Exit codes: 0 shown, 2 bad input or names unknown, 3 AWS could not be asked.
"""


def _say(message: str, *, err: bool = False) -> None:
    typer.echo(message, err=err)


def _guard(command: Callable[..., Any]) -> Callable[..., Any]:
    """devprod's failures become `error: <one line>` and their exit code, whichever app runs the command."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DevprodError as exc:
            _say(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return run


def stack_names(stack: str) -> Any:
    """The stack's output names (devprod.outputs), from the project folder when one is found."""
    from devprod import outputs
    from devprod.plan import find_project_dir

    try:
        folder: Optional[Path] = find_project_dir(None)
    except FileNotFoundError:
        folder = None
    return outputs.load(stack, folder)


def build_clients(names: Any, region: Optional[str], profile: Optional[str], endpoint_url: Optional[str]) -> Any:
    """The one seam for clients (tests replace it to put stubs beside moto)."""
    from devprod.aws import Clients

    # As cli._clients: an unknown region is refused naming where it came from (exit 2).
    value, source = names.region(region)
    return Clients(region=value, profile=profile, endpoint_url=endpoint_url, region_source=source or "")


def _repository(names: Any, flag: Optional[str]) -> Optional[str]:
    return flag or os.environ.get("DEVPROD_REPOSITORY") or ((names.outputs or {}).get("pipeline") or {}).get("repository")


StackOption = typer.Option("prod", "--stack", help="Stack whose outputs name the resources.")
PipelineOption = typer.Option(None, "--pipeline", help="Pipeline name (default: stack output, DEVPROD_PIPELINE).")
DocumentOption = typer.Option(None, "--document", help="Deploy document name (default: stack output).")
RegionOption = typer.Option(None, "--region", envvar="AWS_REGION", help="AWS region (default: stack output, then AWS config).")
ProfileOption = typer.Option(None, "--profile", envvar="AWS_PROFILE", help="AWS profile.")
EndpointOption = typer.Option(None, "--endpoint-url", help="AWS endpoint override (tests, local emulators).")


@_guard
def trace(
    sha: str = typer.Argument("latest", metavar="SHA", help="Commit sha (7-40 hex), or latest (the newest execution; the default)."),
    watch: bool = typer.Option(False, "--watch", help="Follow a running execution until it ends."),
    interval: float = typer.Option(10.0, "--interval", min=0, help="Seconds between refreshes with --watch."),
    max_wait: float = typer.Option(3600.0, "--max-wait", min=0, help="Give up watching after this many seconds (exit 4)."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
    stack: str = StackOption,
    pipeline: Optional[str] = PipelineOption,
    document: Optional[str] = DocumentOption,
    deploy_log_group: Optional[str] = typer.Option(None, "--deploy-log-group", help="Where deploy output goes (default: stack output)."),
    health_url: Optional[str] = typer.Option(None, "--health-url", help="Production health URL (default: stack output)."),
    repository: Optional[str] = typer.Option(None, "--repository", help="App repository OWNER/NAME for GitHub (default: stack output, DEVPROD_REPOSITORY)."),
    scan: int = typer.Option(50, "--scan", min=1, max=1000, help="How many recent executions to search for the commit."),
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    from devprod import trace as traces

    if sha != "latest" and not traces.SHA.match(sha.strip().lower()):
        raise BadInput(f"{sha!r} is not a git sha (7-40 hex characters) or 'latest'")
    names = stack_names(stack)
    clients = build_clients(names, region, profile, endpoint_url)
    settings = dict(
        document=names.get("document", document, required=False),
        log_group=names.get("log_group", deploy_log_group, required=False),
        health_url=names.get("health_url", health_url, required=False),
        repository=_repository(names, repository),
        github_token=os.environ.get("GITHUB_TOKEN") or None,
        scan=scan,
    )
    name = names.get("pipeline", pipeline)

    def snapshot() -> Any:
        return traces.gather(clients, name, sha, **settings)

    result = snapshot()
    if watch:
        result = _watch(result, snapshot, interval, max_wait, as_json)
    if as_json:
        _say(json.dumps(result.to_json(), indent=2))
    elif not watch or not sys.stdout.isatty():
        for line in traces.render_trace(result):
            _say(line)
    healthy = result.health is None or result.health.healthy
    if not (result.verdict and result.verdict.live and healthy):
        raise typer.Exit(EXIT_FAILED)


def _watch(result: Any, snapshot: Callable[[], Any], interval: float, max_wait: float, quiet: bool,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Any:
    """Refresh while the execution runs: a live view on a terminal, each new verdict line in a pipe."""
    from devprod import trace as traces

    started = clock()
    terminal = sys.stdout.isatty() and not quiet
    view = None
    if terminal:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        view = Live(console=Console(), refresh_per_second=2)
        view.start()
    last = None
    try:
        while True:
            if view is not None:
                view.update(Text("\n".join(traces.render_trace(result))))
            elif not quiet and result.verdict and result.verdict.line != last:
                last = result.verdict.line
                _say(f"{datetime.now(timezone.utc):%H:%M:%S} {last}")
            if not result.running:
                return result
            if clock() - started > max_wait:
                raise TimedOut(f"execution {result.execution.id} still {result.execution.status} after {max_wait:.0f}s")
            sleep(interval)
            result = snapshot()
    finally:
        if view is not None:
            view.stop()


trace.__doc__ = TRACE_HELP


@_guard
def history(
    count: int = typer.Option(10, "--count", min=1, max=100, help="How many executions to list."),
    days: int = typer.Option(28, "--days", min=1, max=365, help="The metrics' window in days."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
    stack: str = StackOption,
    pipeline: Optional[str] = PipelineOption,
    document: Optional[str] = DocumentOption,
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    from devprod import trace as traces

    names = stack_names(stack)
    clients = build_clients(names, region, profile, endpoint_url)
    result = traces.history(clients, names.get("pipeline", pipeline), count, days,
                            document=names.get("document", document, required=False))
    if as_json:
        _say(json.dumps(result.to_json(), indent=2))
        return
    for line in traces.render_history(result):
        _say(line)


history.__doc__ = HISTORY_HELP


# ------------------------------------------------------------------ freezes

FREEZE_HELP = """Stop the pipeline from deploying: close the way into its Release stage.

Pushes still run Source and Test; the newest tested execution waits in front
of Release and goes on at `devprod unfreeze`. The reason and who froze it are
stored in the pipeline and shown by `devprod status`. `devprod deploy` and
`rollback` (the emergency path) are not stopped by a freeze.

\b
Exit codes: 0 frozen (or already frozen), 2 bad input or names unknown,
3 AWS could not be asked.
"""

UNFREEZE_HELP = """Let the pipeline deploy again: open the way into its Release stage.

\b
Exit codes: 0 open (or already open), 2 names unknown,
3 AWS could not be asked.
"""


def _pipeline_of(stack: str, pipeline: Optional[str], region: Optional[str], profile: Optional[str],
                 endpoint_url: Optional[str]) -> tuple[Any, str]:
    """The clients and the pipeline's name (flag, DEVPROD_PIPELINE or the stack output)."""
    names = stack_names(stack)
    return build_clients(names, region, profile, endpoint_url), names.get("pipeline", pipeline)


@_guard
def freeze(
    reason: str = typer.Option(..., "--reason", metavar="TEXT", help="Why; letters, digits, spaces and ! @ ( ) . * ? -"),
    stack: str = StackOption,
    pipeline: Optional[str] = PipelineOption,
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    from devprod import freeze as freezes

    clients, name = _pipeline_of(stack, pipeline, region, profile, endpoint_url)
    changed, after = freezes.freeze(clients, name, reason)
    _say(f"{name}: " + ("frozen" if changed else "already frozen, left as it was") + f"; {after.line()}")


@_guard
def unfreeze(
    stack: str = StackOption,
    pipeline: Optional[str] = PipelineOption,
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    from devprod import freeze as freezes

    clients, name = _pipeline_of(stack, pipeline, region, profile, endpoint_url)
    changed, after = freezes.unfreeze(clients, name)
    _say(f"{name}: " + ("unfrozen" if changed else "was not frozen") + f"; {after.line()}")


# ------------------------------------------------------------------ rollback picker


def pick_release(choices: list[Any], now: datetime, *, ask: Callable[..., Any] = typer.prompt) -> Optional[str]:
    """Show the releases and ask which to return to (Enter takes the preselected one).

    For the `rollback` command when it has no --to, stdin is a terminal and
    --yes is not given; returns the chosen sha, or None when there is nothing
    to go back to. Raises BadInput for an answer that is not on the list.
    """
    from devprod import trace as traces

    for line in traces.render_choices(choices, now):
        _say(line)
    selectable = [c for c in choices if not c.current]
    if not selectable:
        return None
    default = next((i for i, c in enumerate(choices, 1) if c.preselected), None)
    answer = str(ask("Roll back to #", default=str(default) if default else None)).strip()
    if not answer.isdigit() or not 1 <= int(answer) <= len(choices):
        raise BadInput(f"{answer!r} is not a number from the list (1-{len(choices)})")
    chosen = choices[int(answer) - 1]
    if chosen.current:
        raise BadInput(f"release {chosen.release[:7]} is already live; pick another")
    return chosen.release


# ------------------------------------------------------------------ wiring


def register(app: typer.Typer) -> None:
    """Add `trace`, `history`, `freeze` and `unfreeze` to a typer app (cli.py's, or a test's)."""
    app.command(name="trace", help=TRACE_HELP)(trace)
    app.command(name="history", help=HISTORY_HELP)(history)
    app.command(name="freeze", help=FREEZE_HELP)(freeze)
    app.command(name="unfreeze", help=UNFREEZE_HELP)(unfreeze)


__all__ = ["register", "trace", "history", "freeze", "unfreeze", "pick_release", "build_clients", "stack_names"]
