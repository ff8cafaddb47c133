"""The `devprod` command line.

\b
Exit codes (all commands):
  0  success
  1  the operation failed (unhealthy, deploy failed and rolled back, ...)
  2  bad input: invalid stack config, unknown developer, bad flag, missing name
  3  AWS could not be asked: no credentials, access denied, throttled, not found
  4  timed out waiting
  70 internal error: a bug in devprod (please report it)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from typer._click.exceptions import ClickException  # typer vendors click; usage errors stay click's
from typer.core import TyperGroup

from devprod.contracts import describe_target
from devprod.errors import EXIT_BAD_INPUT, EXIT_BUG, EXIT_FAILED, EXIT_TIMEOUT, DevprodError

class _Commands(TyperGroup):
    """Maps devprod's failures to one line and their exit code, in one place; a bug stays a bug."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except DevprodError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - anything else is a bug: say so, never call it bad input
            if os.environ.get("DEVPROD_DEBUG"):
                raise
            raise fail(
                f"internal error ({type(exc).__name__}: {exc}); this is a bug in devprod: please report it with "
                "the command you ran (DEVPROD_DEBUG=1 shows the traceback)",
                EXIT_BUG,
            ) from None


app = typer.Typer(
    cls=_Commands,
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _project(project_dir: Optional[Path]) -> Path:
    from devprod.plan import find_project_dir

    try:
        return find_project_dir(project_dir)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None


ProjectDir = typer.Option(None, "--project-dir", help="Folder holding Pulumi.yaml (default: found from the current folder).")


@app.command()
def plan(
    stack: str = typer.Argument(..., help="Stack name: reads Pulumi.STACK.yaml."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan (or the diff) as JSON."),
    diff: Optional[str] = typer.Option(None, "--diff", help="Compare with the plan at a git ref (e.g. origin/main) or a saved --json file; prints markdown grouped by component."),
    fail_on_replace: bool = typer.Option(False, "--fail-on-replace", help="With --diff: exit 1 when an instance, volume or bucket would be replaced or deleted (a box leaving with its developer is expected)."),
    cost: bool = typer.Option(False, "--cost", help="Estimated monthly cost by component (with --diff: the change per component, each side priced with its own schedules)."),
    live_prices: bool = typer.Option(False, "--live-prices", help="With --cost: instance prices from the AWS Price List API (needs credentials)."),
    project_dir: Optional[Path] = ProjectDir,
) -> None:
    """Run the program offline under recording mocks: no cloud calls, no credentials.

    The policy rules (policy/rules.py, the same as the CrossGuard pack) run on
    every recorded resource. Progress goes to stderr. Exit 0 when the plan ran
    clean; 1 when a rule is violated, or with --fail-on-replace when
    data-bearing resources would be replaced or deleted; 2 when the stack
    config is invalid or the base cannot be planned; 3 when live prices cannot
    be read.
    """
    if fail_on_replace and not diff:
        raise fail("--fail-on-replace needs --diff BASE (it judges a change, not a plan)")
    if live_prices and not cost:
        raise fail("--live-prices needs --cost")
    folder = _project(project_dir)
    result = _plan_or_exit(folder, stack)
    found = result.violations()
    changes = None
    if diff:
        changes = _print_diff(folder, stack, diff, result, found, cost, live_prices, as_json)
    elif as_json:
        _print_plan_json(result, found, _estimator(result.config, live_prices, [result.to_json()]) if cost else None)
    else:
        _print_plan(result, found, _estimator(result.config, live_prices, [result.to_json()]) if cost else None)
    for violation in found:
        err.print(f"[red]policy violation[/] {violation['name']}: {violation['message']}", highlight=False)
    if found:
        raise typer.Exit(EXIT_FAILED)
    if changes is not None and fail_on_replace and changes.risky:
        names = ", ".join(f"{c.name} ({c.kind})" for c in changes.risky)
        raise fail(f"data-bearing resources would be replaced or deleted: {names}", EXIT_FAILED)


def _progress(line: str) -> None:
    """Progress for a reader waiting on a plan: stderr only, so stdout stays the plan."""
    err.print(line, style="dim", markup=False, highlight=False)


def _plan_or_exit(folder: Path, stack: str) -> Any:
    """The offline plan, or exit 2 listing every config problem (one line each)."""
    import time

    from components.config import ConfigError
    from devprod.plan import plan_stack

    started = time.perf_counter()
    try:
        result = plan_stack(folder, stack, progress=_progress)
    except ConfigError as exc:
        err.print(f"[red]Pulumi.{stack}.yaml is invalid:[/]", highlight=False)
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    _progress(f"planned {stack}: {len(result.resources)} resources in {time.perf_counter() - started:.1f} s")
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    return result


def _estimator(config: Any, live_prices: bool, plans: list[dict]) -> Any:
    """plan JSON -> cost Estimate, with the static price table or live prices for every
    instance type in `plans` (the head, and with --diff the base)."""
    from devprod import cost as costs

    prices, source = costs.region_prices(config.region) if not live_prices else None, None
    if live_prices:
        from devprod.aws import Clients

        types = [r["inputs"].get("instanceType") for p in plans for r in p.get("resources", []) if r["type"] == costs.INSTANCE]
        static = costs.price_table()["regions"].get(config.region)
        if static is None:
            raise costs.PriceError(f"no EBS/IPv4 prices for region {config.region!r} in prices.json")
        live = costs.live_instance_prices(Clients(region=costs.PRICING_REGION).pricing, config.region, types)
        prices = {**static, "instance_hour": live}
        source = "instance prices: AWS Price List API (live); the rest: prices.json"
    return lambda plan_json: costs.estimate(plan_json, config.region, prices, source)


def _print_diff(folder: Path, stack: str, base_ref: str, result: Any, found: list, cost: bool,
                live_prices: bool, as_json: bool) -> Any:
    from dataclasses import asdict

    from devprod import cost as costs
    from devprod import diff as diffs

    head = result.to_json()
    base = diffs.load_base(folder, base_ref, stack, head=head, progress=_progress)
    changes = diffs.compare(base, head)
    change = None
    if cost:
        estimate_of = _estimator(result.config, live_prices, [head, base])
        after = estimate_of(head)
        try:
            change = costs.CostChange.between(estimate_of(base), after)
        except costs.PriceError as exc:
            err.print(f"cost change unknown: the base plan cannot be priced ({exc})", highlight=False)
    if as_json:
        out.print_json(json.dumps({"stack": stack, "base": base_ref, "changes": [asdict(c) for c in changes.changes],
                                   "costDelta": change.delta if change else None,
                                   "cost": change.to_json() if change else None, "violations": found}))
    else:
        out.print(diffs.markdown(changes, base_ref, change), markup=False, highlight=False, soft_wrap=True)
    return changes


def _print_plan(result: Any, found: list, estimate_of: Any) -> None:
    from devprod.plan_view import render

    render(result, out)
    if not found:
        out.print(f"policy: {len(result.resources)} resources checked, no violations")
    if estimate_of is not None:
        _print_cost(estimate_of(result.to_json()))


def _print_plan_json(result: Any, found: list, estimate_of: Any) -> None:
    from dataclasses import asdict

    payload = {**result.to_json(), "violations": found}
    if estimate_of is not None:
        e = estimate_of(payload)
        payload["cost"] = {"total": e.total, "byComponent": e.by_component(), "lines": [asdict(l) for l in e.lines],
                           "assumptions": e.assumptions, "source": e.source}
    out.print_json(json.dumps(payload))


def _print_cost(e) -> None:
    from rich.table import Table

    from devprod.plan_view import narrow

    view = narrow(out)
    table = Table(title=f"estimated monthly cost, {e.region} (USD)")
    for column in ("component", "item", "quantity", "per month"):
        table.add_column(column, justify="right" if column == "per month" else "left")
    for line in e.lines:
        table.add_row(line.component, line.item, line.quantity, f"{line.monthly:.2f}")
    table.add_row("[bold]total[/]", "", "", f"[bold]{e.total:.2f}[/]")
    view.print(table)
    view.print(f"prices: {e.source}", markup=False)
    for assumption in e.assumptions:
        view.print(f"assumes: {assumption}", markup=False)


def _apply(edit, dry_run: bool) -> bool:
    """Write the roster edit, or with --dry-run show it; True when written."""
    if dry_run:
        out.print(edit.diff(), markup=False, highlight=False)
        out.print("dry run: nothing written")
        return False
    edit.write()
    return True


def _read_key(ssh_key: str) -> str:
    if ssh_key == "-":
        return sys.stdin.read().strip()
    path = Path(ssh_key).expanduser()
    if not path.is_file():
        raise fail(f"--ssh-key {ssh_key}: no such file (give the .pub file, or - for standard input)")
    return path.read_text().strip()


@app.command()
def onboard(
    name: str = typer.Argument(..., help="Developer name: their Linux user and host alias."),
    ssh_key: str = typer.Option(..., "--ssh-key", help="Public key file (.pub), or - to read it from standard input."),
    instance_type: Optional[str] = typer.Option(None, "--instance-type", help="Overrides devDefaults.instanceType."),
    os_: Optional[str] = typer.Option(None, "--os", help="al2023 or ubuntu-24.04."),
    access: Optional[str] = typer.Option(None, "--access", help="ssm (default, no open port) or ssh."),
    cidr: list[str] = typer.Option([], "--cidr", help="With --access ssh: a CIDR allowed to reach port 22 (repeat)."),
    home_gib: Optional[int] = typer.Option(None, "--home-gib", help="Home volume size in GiB."),
    always_on: bool = typer.Option(False, "--always-on", help="Never stop this box automatically."),
    stack: str = typer.Option("dev", "--stack", help="Stack whose roster to edit."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the change to the stack file; write nothing."),
    project_dir: Optional[Path] = ProjectDir,
) -> None:
    """Add a developer to Pulumi.STACK.yaml (comments kept), validated before writing.

    Exit 0 when written (or shown with --dry-run), 2 when the entry is refused.
    """
    if cidr and access != "ssh":
        raise fail("--cidr needs --access ssh (an SSM box opens no port)")
    folder = _project(project_dir)
    from devprod.plan import project_name, stack_file
    from devprod.roster import add_developer

    entry: dict[str, object] = {"name": name, "sshPublicKey": _read_key(ssh_key)}
    optional = {
        "instanceType": instance_type,
        "os": os_,
        "access": access,
        "allowedSshCidrs": list(cidr) or None,
        "homeVolumeGiB": home_gib,
        "schedule": "always-on" if always_on else None,
    }
    entry.update({k: v for k, v in optional.items() if v is not None})
    edit = add_developer(stack_file(folder, stack), entry, project=project_name(folder), stack=stack)
    if not _apply(edit, dry_run):
        return
    out.print(f"Added {name} to {edit.path.name}.", highlight=False)
    out.print(
        "Next: `make plan` to see the new box, commit and open a pull request (CI posts the "
        f"preview), then `pulumi up --stack {stack}`. Afterwards `pulumi stack output "
        f"developers --stack {stack}` has {name}'s ssh config block.",
        highlight=False,
    )


@app.command()
def offboard(
    name: str = typer.Argument(..., help="Developer to remove from the roster."),
    stack: str = typer.Option("dev", "--stack", help="Stack whose roster to edit."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the change to the stack file; write nothing."),
    project_dir: Optional[Path] = ProjectDir,
) -> None:
    """Remove a developer from Pulumi.STACK.yaml. Their home volume is kept.

    Exit 0 when written (or shown with --dry-run), 2 when the name is not in the roster.
    """
    folder = _project(project_dir)
    from devprod.plan import project_name, stack_file
    from devprod.roster import remove_developer

    edit = remove_developer(stack_file(folder, stack), name, project=project_name(folder), stack=stack)
    if not _apply(edit, dry_run):
        return
    out.print(f"Removed {name} from {edit.path.name}.", highlight=False)
    out.print(
        f"On `pulumi up --stack {stack}` the box, its role and schedules are deleted. The home "
        f"volume ({name}-home, tag devprod:home-of={name}) is retained in the account "
        "(retainOnDelete): re-onboarding does not reattach it automatically; delete it with "
        "`aws ec2 delete-volume` once its data is no longer needed.",
        highlight=False,
    )


# ---------------------------------------------------------------- operations

StackOption = typer.Option("prod", "--stack", help="Stack whose outputs name the resources.")
RegionOption = typer.Option(None, "--region", envvar="AWS_REGION", help="AWS region (default: stack output, then AWS config).")
ProfileOption = typer.Option(None, "--profile", envvar="AWS_PROFILE", help="AWS profile.")
EndpointOption = typer.Option(None, "--endpoint-url", help="AWS endpoint override (tests, local emulators).")
ArtifactBucketOption = typer.Option(
    None, "--artifact-bucket", help="Bucket holding releases/ and their checksums (default: stack output)."
)


def _names(stack: str, project_dir: Optional[Path] = None):
    from devprod import outputs

    folder = None
    try:
        folder = _project(project_dir)
    except typer.Exit:
        folder = None
    return outputs.load(stack, folder)


def _clients(names, region: Optional[str], profile: Optional[str], endpoint: Optional[str]):
    from devprod.aws import Clients

    return Clients(region=names.get("region", region, required=False), profile=profile, endpoint_url=endpoint)


def _status_table(rows):
    from rich.table import Table

    table = Table(title="pipeline executions (newest first)")
    for column in ("execution", "status", "commit", "trigger", "started", "took", "stages"):
        table.add_column(column, overflow="fold")
    for e in rows:
        took = f"{e.duration_seconds:.0f}s" if e.duration_seconds is not None else ""
        stages = "  ".join(f"{k}:{v}" for k, v in e.stages.items())
        table.add_row(e.id, e.status, (e.commit or "")[:12], e.trigger or "", e.started or "", took, stages)
    return table


@app.command()
def status(
    stack: str = StackOption,
    pipeline: Optional[str] = typer.Option(None, "--pipeline", help="Pipeline name (default: stack output)."),
    health_url: Optional[str] = typer.Option(None, "--health-url", help="Production /health URL (default: stack output)."),
    deploy_log_group: Optional[str] = typer.Option(None, "--deploy-log-group", help="Where deploy output goes (default: stack output); read when /health reports no release."),
    limit: int = typer.Option(5, "--limit", min=1, max=50, help="How many executions."),
    watch: bool = typer.Option(False, "--watch", help="Refresh until the newest execution ends."),
    interval: float = typer.Option(10.0, "--interval", help="Seconds between refreshes with --watch."),
    max_wait: float = typer.Option(3600.0, "--max-wait", help="Give up watching after this many seconds (exit 4)."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """The last pipeline executions (commit, trigger, duration, stages) and the release production serves.

    Exit 0, or 2 (names unknown), 3 (AWS error), 4 (--watch gave up).
    """
    from dataclasses import asdict

    from devprod import ops

    names = _names(stack)
    clients = _clients(names, region, profile, endpoint_url)
    name = names.get("pipeline", pipeline)
    url = names.get("health_url", health_url, required=False)
    log_group = names.get("log_group", deploy_log_group, required=False)

    def snapshot():
        rows = ops.executions(clients.codepipeline, name, limit)
        live = ops.check_health(url, retries=1, timeout=3) if url else None
        source = "health" if live and live.release else None
        if source is None and log_group:
            release = ops.release_from_deploy_log(clients.logs, log_group)
            if release:
                live = live or ops.Health(url or "", False, None, None, None, 0, "no health URL known")
                live.release, source = release, "deploy-log"
        return rows, live, source

    if watch and not as_json:
        import time as _time

        from rich.live import Live

        started = _time.monotonic()
        with Live(console=out, refresh_per_second=2) as view:
            while True:
                rows, live, source = snapshot()
                view.update(_status_table(rows))
                if not rows or rows[0].status not in ("InProgress", "Stopping"):
                    break
                if _time.monotonic() - started > max_wait:
                    raise fail(f"still {rows[0].status} after {max_wait:.0f}s", EXIT_TIMEOUT)
                _time.sleep(interval)
    else:
        rows, live, source = snapshot()
    if as_json:
        out.print_json(json.dumps({
            "pipeline": name,
            "executions": [asdict(r) for r in rows],
            "production": {**asdict(live), "releaseSource": source} if live else None,
        }))
        return
    if not watch:
        from devprod.render import print_wide

        print_wide(out, _status_table(rows))
    where = f" (from the {source.replace('-', ' ')})" if source else ""
    if live is None:
        out.print("production: no health URL or deploy log known (pass --health-url)")
    elif live.healthy:
        slot = f" in slot {live.slot}" if live.slot else ""
        out.print(f"production: healthy, serving release {live.release or '(not reported)'}{slot}{where}", highlight=False)
    elif live.release:
        out.print(f"production: {live.error}; last switched to release {live.release}{where}", highlight=False)
    else:
        out.print(f"production: UNHEALTHY ({live.error}) at {live.url}", highlight=False)


@app.command()
def logs(
    execution_id: Optional[str] = typer.Argument(None, help="Pipeline execution (default: the latest failed one)."),
    stack: str = StackOption,
    pipeline: Optional[str] = typer.Option(None, "--pipeline"),
    document: Optional[str] = typer.Option(None, "--document", help="Deploy document name (default: stack output)."),
    tail: int = typer.Option(50, "--tail", min=1, max=10000, help="Build log lines per action."),
    as_json: bool = typer.Option(False, "--json"),
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """Build log tails and per-instance deploy output of one execution.

    Exit 0, or 1 (no failed execution to show), 2, 3.
    """
    from dataclasses import asdict

    from devprod import ops

    names = _names(stack)
    clients = _clients(names, region, profile, endpoint_url)
    name = names.get("pipeline", pipeline)
    doc = names.get("document", document, required=False)
    target = execution_id or ops.latest_failed(clients.codepipeline, name)
    if target is None:
        raise fail(f"no failed execution among the recent ones of {name}; pass an EXECUTION_ID", EXIT_FAILED)
    sections = ops.execution_logs(clients, name, target, doc, tail)
    if as_json:
        out.print_json(json.dumps({"execution": target, "sections": [asdict(s) for s in sections]}))
        return
    out.print(f"[bold]execution {target}[/] of {name}", highlight=False)
    for section in sections:
        out.rule(section.title)
        out.print("\n".join(section.lines) or "(no output)", markup=False, highlight=False)


@app.command()
def health(
    url: Optional[str] = typer.Option(None, "--url", help="Health URL (default: stack output healthUrl)."),
    stack: str = StackOption,
    retries: int = typer.Option(3, "--retries", min=1, max=20),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds per attempt."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Check production's health endpoint: status, latency, release and the slot nginx routes to.

    Exit 0 healthy, 1 unhealthy, 2 no URL known.
    """
    from dataclasses import asdict

    from devprod import ops

    names = _names(stack)
    target = names.get("health_url", url, option="--url")
    result = ops.check_health(target, retries=retries, timeout=timeout, pause=min(1.0, timeout))
    if as_json:
        out.print_json(json.dumps(asdict(result)))
    elif result.healthy:
        slot = f", slot {result.slot}" if result.slot else ""
        out.print(f"healthy: HTTP {result.status} in {result.latency_ms} ms, release {result.release or '(not reported)'}{slot} ({target})", highlight=False)
    else:
        out.print(f"UNHEALTHY after {result.attempts} attempt(s): {result.error} ({target})", highlight=False)
    if not result.healthy:
        raise typer.Exit(EXIT_FAILED)


def _progress_table(states):
    from rich.table import Table

    table = Table(title="deploy document")
    table.add_column("instance")
    table.add_column("status")
    for state in states.values():
        table.add_row(state.instance_id, state.status)
    return table


def _run_document(action: str, release: Optional[str], stack: str, document: Optional[str], yes: bool,
                  dry_run: bool, timeout: float, poll: float, region, profile, endpoint_url,
                  artifact_bucket: Optional[str] = None) -> None:
    from devprod import ops

    names = _names(stack)
    clients = _clients(names, region, profile, endpoint_url)
    doc = names.get("document", document)
    log_group = names.get("log_group", None, required=False)
    instances = ops.production_instances(clients.ec2, stack)
    if not instances:
        raise fail(f"no running instance tagged {describe_target(stack)}", EXIT_FAILED)
    ops.deploy_request(doc, instances, action, release, log_group)  # checks the sha first
    checksum = None
    if release is not None:
        # The host verifies a download against the published checksum (S26). A
        # deploy of a release that was never published fails here, before
        # anything is sent; a rollback may name a release only the host has.
        bucket = names.get("bucket", artifact_bucket)
        checksum = ops.release_checksum(clients.s3, bucket, release, required=action == "deploy")
    request = ops.deploy_request(doc, instances, action, release, log_group, checksum)
    if dry_run:
        out.print_json(json.dumps({"dryRun": True, "sendCommand": request}))
        return
    what = f"{action} {release or 'to the previous release'} on {', '.join(instances)} ({stack})"
    if not yes and not typer.confirm(f"Run {what}?", default=False):
        raise fail("not confirmed; nothing sent", EXIT_BAD_INPUT)
    command_id = ops.send(clients.ssm, request)
    out.print(f"command {command_id}: {what}", highlight=False)
    from rich.live import Live

    with Live(console=out, refresh_per_second=4, transient=False) as view:
        states, timed_out = ops.wait_for(
            clients.ssm, command_id, instances, timeout=timeout, poll=poll,
            on_update=lambda s: view.update(_progress_table(s)),
        )
    for state in states.values():
        out.rule(f"{state.instance_id}: {state.status}")
        out.print((state.output + ("\n" + state.error if state.error else "")).strip() or "(no output)",
                  markup=False, highlight=False)
    if timed_out:
        raise fail(f"command {command_id} still running after {timeout:.0f}s", EXIT_TIMEOUT)
    if any(s.status != "Success" for s in states.values()):
        raise fail(f"{action} failed: " + ", ".join(f"{s.instance_id} {s.status}" for s in states.values()), EXIT_FAILED)
    out.print(f"{action} succeeded", highlight=False)


@app.command()
def deploy(
    release: str = typer.Option(..., "--release", help="Git sha of the release to deploy (must be in the artifact bucket)."),
    stack: str = StackOption,
    document: Optional[str] = typer.Option(None, "--document", help="Deploy document (default: stack output)."),
    artifact_bucket: Optional[str] = ArtifactBucketOption,
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the SendCommand request; send nothing."),
    timeout: float = typer.Option(2100.0, "--timeout", help="Seconds to wait for the hosts."),
    poll: float = typer.Option(5.0, "--poll", help="Seconds between status polls."),
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """Emergency path: run the deploy document on production directly, bypassing the pipeline.

    Exit 0 success, 1 failed (the host rolled back), 2 bad input or not confirmed, 3 AWS error, 4 timed out.
    """
    _run_document("deploy", release, stack, document, yes, dry_run, timeout, poll, region, profile, endpoint_url,
                  artifact_bucket)


@app.command()
def rollback(
    to: Optional[str] = typer.Option(None, "--to", help="Git sha to return to (default: the previous release)."),
    stack: str = StackOption,
    document: Optional[str] = typer.Option(None, "--document"),
    artifact_bucket: Optional[str] = ArtifactBucketOption,
    yes: bool = typer.Option(False, "--yes"),
    dry_run: bool = typer.Option(False, "--dry-run"),
    timeout: float = typer.Option(2100.0, "--timeout"),
    poll: float = typer.Option(5.0, "--poll"),
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """Switch production back to the previous release (or --to SHA) with the same health gate.

    Exit codes as for deploy.
    """
    _run_document("rollback", to, stack, document, yes, dry_run, timeout, poll, region, profile, endpoint_url,
                  artifact_bucket)


@app.command()
def ssh(
    name: str = typer.Argument(..., help="Developer whose box to open."),
    stack: str = typer.Option("dev", "--stack"),
    instance_id: Optional[str] = typer.Option(None, "--instance-id", help="Box instance id (default: stack output)."),
    region: Optional[str] = typer.Option(None, "--region", envvar="AWS_REGION"),
    print_only: bool = typer.Option(False, "--print", help="Print the ssh command instead of running it."),
) -> None:
    """SSH to a developer's box through SSM (AWS-StartSSHSession); no inbound port needed.

    Exit: ssh's own exit code; 2 unknown developer; 1 Session Manager plugin or ssh missing.
    """
    import os
    import shutil

    names = _names(stack)
    target = instance_id or (names.developer(name) or {}).get("instanceId")
    if not target:
        raise fail(f"no instance id for developer {name!r} in stack {stack}: pass --instance-id ({names.note or 'not in outputs'})")
    if shutil.which("session-manager-plugin") is None:
        raise fail(
            "the AWS Session Manager plugin is not installed (session-manager-plugin not on PATH); see "
            "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html",
            EXIT_FAILED,
        )
    if shutil.which("ssh") is None:
        raise fail("ssh is not installed", EXIT_FAILED)
    proxy = "aws ssm start-session --target %h --document-name AWS-StartSSHSession --parameters portNumber=%p"
    if region:
        proxy += f" --region {region}"
    argv = ["ssh", "-o", f"ProxyCommand={proxy}", f"{name}@{target}"]
    if print_only:
        import shlex

        out.print(shlex.join(argv), markup=False, highlight=False)
        return
    os.execvp("ssh", argv)


@app.command()
def bootstrap(
    region: str = typer.Option(..., "--region", help="Region of the state bucket and key."),
    bucket: str = typer.Option(..., "--bucket", help="State bucket name (globally unique)."),
    key_alias: str = typer.Option("alias/devprod-pulumi", "--key-alias", help="KMS alias for the secrets provider."),
    as_json: bool = typer.Option(False, "--json"),
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """Create what Pulumi's own state needs: a private, versioned, encrypted, TLS-only bucket and a KMS key.

    Idempotent: a second run changes nothing. Exit 0, 2 bad name, 3 AWS error.
    """
    import re

    from devprod import ops
    from devprod.aws import Clients

    if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket) or ".." in bucket:
        raise fail(f"--bucket {bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
    clients = Clients(region=region, profile=profile, endpoint_url=endpoint_url)
    result = ops.bootstrap(clients.s3, clients.kms, region=region, bucket=bucket, key_alias=key_alias)
    if as_json:
        out.print_json(json.dumps(result.to_json()))
        return
    for line in result.changed or ["nothing changed: bucket and key were already in place"]:
        out.print(f"- {line}", highlight=False)
    out.print(f"bucket s3://{result.bucket}, key {result.key_alias} ({result.key_arn})", highlight=False)
    out.print("next:", highlight=False)
    out.print(f"  {result.login}", markup=False, highlight=False)
    out.print(f"  {result.stack_init}", markup=False, highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
