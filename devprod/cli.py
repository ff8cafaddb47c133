"""The `devprod` command line.

\b
Exit codes (all commands):
  0  success
  1  the operation failed (unhealthy, deploy failed and rolled back, ...)
  2  bad input: invalid stack config, unknown developer, bad flag or name
  3  AWS could not be asked: no credentials, denied, throttled, not found
  4  timed out waiting
  70 internal error: a bug in devprod (please report it)
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer vendors click
from typer.core import TyperCommand, TyperGroup

from devprod import contracts
from devprod.contracts import describe_target, live_release_parameter
from devprod.errors import EXIT_BAD_INPUT, EXIT_BUG, EXIT_FAILED, EXIT_TIMEOUT, DevprodError


class _Command(TyperCommand):
    """Help that names values in plain words: `onboard [OPTIONS] NAME`, `--release SHA`.

    typer writes a required argument as `{name}` with its Python type beside it
    and an option without a metavar as `<str>`; a reader wants the word.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is None and not getattr(param, "is_flag", False):
                param.metavar = (param.opts[-1].lstrip("-") if param.param_type_name == "option" else param.name).upper().replace("-", "_")

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        rows = {"argument": [], "option": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and param.param_type_name in rows:
                name = param.metavar if param.param_type_name == "argument" else record[0]
                rows[param.param_type_name].append((name, record[1]))
        for title, kind in (("Arguments", "argument"), ("Options", "option")):
            if rows[kind]:
                with formatter.section(title):
                    formatter.write_dl(rows[kind])


class _App(typer.Typer):
    """Every command of this app is a _Command."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


def _usage(exc: UsageError) -> Exception:
    """click prints usage, a hint and the error on four lines: one is enough (the help it shows for no arguments stays)."""
    if isinstance(exc, NoArgsIsHelpError):
        return exc
    hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
    return fail(exc.format_message() + hint, exc.exit_code)


class _Commands(TyperGroup):
    """Maps devprod's failures to one line and their exit code, in one place; a bug stays a bug."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as exc:  # an option of devprod itself, before any command
            raise _usage(exc) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except DevprodError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except UsageError as exc:
            raise _usage(exc) from None
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


app = _App(
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


ProjectDir = typer.Option(None, "--project-dir", metavar="PATH", help="Folder holding Pulumi.yaml (default: found from the current folder).")


@app.command()
def plan(
    stack: str = typer.Argument(..., help="Stack name: reads Pulumi.STACK.yaml."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan (or the diff) as JSON."),
    diff: Optional[str] = typer.Option(None, "--diff", metavar="BASE", help="Compare with the plan at a git ref (e.g. origin/main) or a saved --json file; prints markdown grouped by component."),
    fail_on_replace: bool = typer.Option(False, "--fail-on-replace", help="With --diff: exit 1 when an instance, volume or bucket would be replaced or deleted (a box leaving with its developer is expected)."),
    cost: bool = typer.Option(False, "--cost", help="Estimated monthly cost by component (with --diff: the change per component, each side priced with its own schedules)."),
    live_prices: bool = typer.Option(False, "--live-prices", help="With --cost: instance prices from the AWS Price List API (needs credentials)."),
    diagram: bool = typer.Option(False, "--diagram", help="Print a Mermaid flowchart of the stack; with --diff, appended to the markdown with added, changed, replaced and removed parts marked."),
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
    if diagram and (as_json or cost) and not diff:
        raise fail("--diagram prints a Mermaid flowchart: it does not combine with --json or --cost without --diff")
    if diagram and as_json:
        raise fail("--diagram adds a picture to the markdown diff; it does not combine with --json")
    folder = _project(project_dir)
    result = _plan_or_exit(folder, stack)
    found = result.violations()
    changes = None
    if diff:
        changes = _print_diff(folder, stack, diff, result, found, cost, live_prices, as_json, diagram)
    elif diagram:
        from devprod.diagram import mermaid

        out.print(mermaid(result), markup=False, highlight=False, soft_wrap=True)
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
        pricing = Clients(region=costs.PRICING_REGION).pricing
        prices = {**static, "instance_hour": costs.live_instance_prices(pricing, config.region, types)}
        source = "instance prices: AWS Price List API (live); the rest: prices.json"
        if any(r["type"] == costs.LOAD_BALANCER for p in plans for r in p.get("resources", [])):
            prices.update(costs.live_load_balancer_prices(pricing, config.region))
            source = "instance and load balancer prices: AWS Price List API (live); the rest: prices.json"
    return lambda plan_json: costs.estimate(plan_json, config.region, prices, source)


def _print_diff(folder: Path, stack: str, base_ref: str, result: Any, found: list, cost: bool,
                live_prices: bool, as_json: bool, diagram: bool = False) -> Any:
    from dataclasses import asdict

    from devprod import cost as costs
    from devprod import diff as diffs

    head = result.to_json()
    base = diffs.load_base(folder, base_ref, stack, head=head, progress=_progress)
    changes = diffs.compare(base, head)
    change = None
    if cost:
        estimate_of = _estimator(result.config, live_prices, [head, base])
        after = estimate_of(costs.still_billed(head, base))  # a retained volume keeps billing
        try:
            change = costs.CostChange.between(estimate_of(base), after)
        except costs.PriceError as exc:
            err.print(f"cost change unknown: the base plan cannot be priced ({exc})", highlight=False)
    if as_json:
        out.print_json(json.dumps({"stack": stack, "base": base_ref, "changes": [asdict(c) for c in changes.changes],
                                   "costDelta": change.delta if change else None,
                                   "cost": change.to_json() if change else None, "violations": found}))
    else:
        text = diffs.markdown(changes, base_ref, change)
        if diagram:
            from devprod import diagram as diagrams

            marks = diagrams.changes_by_name(changes.changes, head, base)
            text += "\n" + diagrams.markdown(result, marks, title=f"{stack} after this change")
        out.print(text, markup=False, highlight=False, soft_wrap=True)
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
        key = sys.stdin.read().strip()
        if not key:
            raise fail("--ssh-key -: standard input is empty (pipe the .pub file in)")
        return key
    path = Path(ssh_key).expanduser()
    if not path.is_file():
        raise fail(f"--ssh-key {ssh_key}: no such file (give the .pub file, or - for standard input)")
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"--ssh-key {ssh_key}: cannot read it as a text file ({getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or exc})") from None


@app.command()
def onboard(
    name: str = typer.Argument(..., help="Developer name: their Linux user and host alias."),
    ssh_key: str = typer.Option(..., "--ssh-key", metavar="FILE", help="Public key file (.pub), or - to read it from standard input."),
    instance_type: Optional[str] = typer.Option(None, "--instance-type", metavar="TYPE", help="Overrides devDefaults.instanceType."),
    os_: Optional[str] = typer.Option(None, "--os", help="al2023 or ubuntu-24.04."),
    access: Optional[str] = typer.Option(None, "--access", help="ssm (default, no open port) or ssh."),
    cidr: list[str] = typer.Option([], "--cidr", metavar="CIDR", help="With --access ssh: a CIDR allowed to reach port 22 (repeat)."),
    home_gib: Optional[int] = typer.Option(None, "--home-gib", metavar="GIB", help="Home volume size in GiB."),
    always_on: bool = typer.Option(False, "--always-on", help="Never stop this box automatically."),
    stack: str = typer.Option("dev", "--stack", help="Stack whose roster to edit."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the change to the stack file; write nothing."),
    project_dir: Optional[Path] = ProjectDir,
) -> None:
    """Add a developer to Pulumi.STACK.yaml (comments kept), validated before writing.

    Exit 0 when written (or shown with --dry-run), 2 when the entry is refused.
    """
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
    from devprod.render import plain, prose

    plain(out, f"Added {name} to {edit.path.name}.")
    prose(out, "Next: `make plan` to see the new box, commit and open a pull request (CI posts the "
               f"preview), then `pulumi up --stack {stack}`. Afterwards `pulumi stack output "
               f"developers --stack {stack}` has {name}'s ssh config block.")


@app.command()
def offboard(
    name: str = typer.Argument(..., metavar="NAME", help="Developer to remove from the roster."),
    stack: str = typer.Option("dev", "--stack", metavar="STACK", help="Stack whose roster to edit."),
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
    from devprod.render import plain, prose

    plain(out, f"Removed {name} from {edit.path.name}.")
    prose(out, f"On `pulumi up --stack {stack}` the box, its role and schedules are deleted. The home "
               f"volume ({name}-home, tag devprod:home-of={name}) is retained in the account "
               "(retainOnDelete): re-onboarding does not reattach it automatically; delete it with "
               "`aws ec2 delete-volume` once its data is no longer needed.")


# ---------------------------------------------------------------- operations

StackOption = typer.Option("prod", "--stack", metavar="STACK", help="Stack whose outputs name the resources.")
RegionOption = typer.Option(
    None, "--region", metavar="REGION",
    help="AWS region (default: AWS_REGION, DEVPROD_REGION, the stack output, then the AWS config).",
)
ProfileOption = typer.Option(None, "--profile", envvar="AWS_PROFILE", metavar="PROFILE", help="AWS profile from the AWS config.")
EndpointOption = typer.Option(None, "--endpoint-url", metavar="URL", help="AWS endpoint override (tests, local emulators).")
JsonOption = typer.Option(False, "--json", help="Print JSON for scripts instead of text.")
ArtifactBucketOption = typer.Option(
    None, "--artifact-bucket", metavar="BUCKET", help="Bucket holding releases/ and their checksums (default: stack output)."
)
DocumentOption = typer.Option(None, "--document", metavar="NAME", help="Deploy document name (default: stack output).")
PipelineOption = typer.Option(None, "--pipeline", metavar="NAME", help="Pipeline name (default: stack output).")


def _names(stack: str, project_dir: Optional[Path] = None):
    from devprod import outputs

    folder = None
    try:
        folder = _project(project_dir)
    except typer.Exit:
        folder = None
    return outputs.load(stack, folder)


def _clients(names, region: Optional[str], profile: Optional[str], endpoint: Optional[str]):
    """Clients for the region the flags, environment or stack outputs name; an unknown region is refused by name."""
    from devprod.aws import Clients

    value, source = names.region(region)
    return Clients(region=value, profile=profile, endpoint_url=endpoint, region_source=source or "")


def _started(value: Optional[str]) -> str:
    """An ISO timestamp as `MM-DD HH:MM` UTC: short enough for an 80-column row."""
    from datetime import datetime, timezone

    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).astimezone(timezone.utc).strftime("%m-%d %H:%M")
    except ValueError:
        return value


def _took(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def status_lines(rows) -> list[str]:
    """Executions as aligned lines (the id whole, for `devprod logs ID`), each followed by its stages."""
    from devprod.render import aligned

    table = aligned(
        ("execution", "status", "commit", "started UTC", "took"),
        [(e.id, e.status, (e.commit or "")[:8], _started(e.started), _took(e.duration_seconds)) for e in rows],
    )
    lines = [table[0]]
    for line, e in zip(table[1:], rows):
        stages = ", ".join(f"{stage} {state}" for stage, state in e.stages.items()) or "no stages reported"
        lines += [line, f"    {stages}" + (f" (by {e.trigger})" if e.trigger else "")]
    return lines


def production_line(live, source: Optional[str]) -> str:
    """One line on what production serves, and where that was read."""
    where = {"health": " (from /health)", "deploy-log": " (from the deploy log)"}.get(source or "", "")
    if live is None:
        return "production: unknown (pass --health-url or --deploy-log-group)"
    if live.healthy:
        slot = f" in slot {live.slot}" if live.slot else ""
        return f"production: healthy, serving release {live.release or '(not reported)'}{slot}{where}"
    if live.release:
        return f"production: {live.error}; last switched to release {live.release}{where}"
    return f"production: UNHEALTHY ({live.error}) at {live.url}"


def _freeze_state(clients, pipeline: str):
    """(Freeze, None), or (None, why it could not be read): status still shows the rest."""
    from devprod import freeze
    from devprod.errors import DevprodError

    try:
        return freeze.state(clients.codepipeline, pipeline), None
    except DevprodError as exc:
        return None, str(exc)


def _print_status(rows, live, source: Optional[str], frozen=(None, None)) -> None:
    from devprod.render import plain

    if not rows:
        out.print("no executions yet", highlight=False)
    for line in status_lines(rows) if rows else []:
        plain(out, line, wrap=True)
    state, problem = frozen
    plain(out, state.line() if state else f"deploys: freeze state unknown ({problem})", wrap=True)
    plain(out, production_line(live, source), wrap=True)


def _watch(snapshot, interval: float, max_wait: float):
    """Take snapshots until the newest execution ends; progress on stderr, the result is the last snapshot."""
    import time

    from devprod.render import progress

    started = time.monotonic()
    with progress(err, "newest execution") as report:
        while True:
            rows, live, source = snapshot()
            if rows:
                report({rows[0].id: rows[0].status})
            if not rows or rows[0].status not in ("InProgress", "Stopping"):
                return rows, live, source
            if time.monotonic() - started > max_wait:
                raise fail(f"--max-wait {max_wait:g}: execution {rows[0].id} still {rows[0].status}", EXIT_TIMEOUT)
            time.sleep(interval)


@app.command()
def status(
    ctx: typer.Context,
    stack: str = StackOption,
    pipeline: Optional[str] = PipelineOption,
    health_url: Optional[str] = typer.Option(None, "--health-url", metavar="URL", help="Production /health URL (default: stack output)."),
    deploy_log_group: Optional[str] = typer.Option(None, "--deploy-log-group", metavar="GROUP", help="Where deploy output goes (default: stack output); read when /health reports no release."),
    limit: int = typer.Option(5, "--limit", min=1, max=50, metavar="N", help="How many executions."),
    watch: bool = typer.Option(False, "--watch", help="Refresh until the newest execution ends."),
    interval: float = typer.Option(10.0, "--interval", min=0, metavar="SECONDS", help="Seconds between refreshes with --watch."),
    max_wait: float = typer.Option(3600.0, "--max-wait", min=0, metavar="SECONDS", help="Give up watching after this many seconds (exit 4)."),
    as_json: bool = JsonOption,
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """The last pipeline executions (commit, trigger, duration, stages), whether deploys are frozen, and the release production serves.

    Exit 0, or 2 (names unknown), 3 (AWS error), 4 (--watch gave up).
    """
    from dataclasses import asdict

    from devprod import ops

    given = [f"--{n.replace('_', '-')}" for n in ("interval", "max_wait") if ctx.get_parameter_source(n).name != "DEFAULT"]
    if given and not watch:
        raise fail(f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} --watch")
    names = _names(stack)
    clients = _clients(names, region, profile, endpoint_url)
    name = names.get("pipeline", pipeline)
    url = names.get("health_url", health_url, required=False, option="--health-url")
    log_group = names.get("log_group", deploy_log_group, required=False, option="--deploy-log-group")

    def snapshot():
        return (ops.executions(clients.codepipeline, name, limit), *ops.production_state(clients, url, log_group))

    rows, live, source = _watch(snapshot, interval, max_wait) if watch else snapshot()
    frozen = _freeze_state(clients, name)
    if as_json:
        out.print_json(json.dumps({
            "pipeline": name,
            "executions": [asdict(r) for r in rows],
            "freeze": asdict(frozen[0]) if frozen[0] else {"unknown": frozen[1]},
            "production": {**asdict(live), "releaseSource": source} if live else None,
        }))
        return
    _print_status(rows, live, source, frozen)


@app.command()
def logs(
    execution_id: Optional[str] = typer.Argument(None, metavar="EXECUTION_ID", help="Pipeline execution (default: the latest failed one)."),
    stack: str = StackOption,
    pipeline: Optional[str] = PipelineOption,
    document: Optional[str] = DocumentOption,
    tail: int = typer.Option(50, "--tail", min=1, max=10000, metavar="LINES", help="Build log lines per action."),
    as_json: bool = JsonOption,
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """Build log tails and per-instance deploy output of one execution.

    Exit 0, or 1 (no failed execution to show), 2, 3.
    """
    from dataclasses import asdict

    from devprod import ops
    from devprod.render import heading, plain

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
    plain(out, f"execution {target} of {name}")
    for section in sections:
        heading(out, section.title)
        plain(out, "\n".join(section.lines) or "(no output)")


@app.command()
def health(
    url: Optional[str] = typer.Option(None, "--url", metavar="URL", help="Health URL (default: stack output healthUrl)."),
    stack: str = StackOption,
    retries: int = typer.Option(3, "--retries", min=1, max=20, metavar="N", help="Attempts before calling it unhealthy."),
    timeout: float = typer.Option(5.0, "--timeout", metavar="SECONDS", help="Seconds per attempt."),
    as_json: bool = JsonOption,
) -> None:
    """Check production's health endpoint: status, latency, release and the slot nginx routes to.

    Exit 0 healthy, 1 unhealthy, 2 no URL known or a bad flag.
    """
    from dataclasses import asdict

    from devprod import ops
    from devprod.render import plain

    names = _names(stack)
    target = names.get("health_url", url, option="--url")
    result = ops.check_health(target, retries=retries, timeout=timeout, pause=min(1.0, timeout))
    if as_json:
        out.print_json(json.dumps(asdict(result)))
    elif result.healthy:
        slot = f", slot {result.slot}" if result.slot else ""
        plain(out, f"healthy: HTTP {result.status} in {result.latency_ms} ms, release {result.release or '(not reported)'}{slot} ({target})", wrap=True)
    else:
        plain(out, f"UNHEALTHY after {result.attempts} attempt(s): {result.error} ({target})", wrap=True)
    if not result.healthy:
        raise typer.Exit(EXIT_FAILED)


def _can_ask() -> bool:
    """True when a person can answer a confirmation prompt (standard input is a terminal)."""
    return sys.stdin.isatty()


def _request(action: str, release: Optional[str], flag: str, stack: str, names, clients, document, bucket_flag):
    """The SendCommand request: the release resolved to its full sha and its published checksum (S26)."""
    from devprod import ops

    if release is not None:
        release = ops.parse_release(release, flag)  # a malformed sha is refused before any AWS call
    doc = names.get("document", document)
    instances = ops.production_instances(clients.ec2, stack)
    if not instances:
        raise fail(f"no running instance tagged {describe_target(stack)}", EXIT_FAILED)
    checksum = None
    if release is not None:
        bucket = names.get("bucket", bucket_flag, option="--artifact-bucket")
        release = ops.resolve_release(clients.s3, bucket, release, flag=flag)
        checksum = ops.release_checksum(clients.s3, bucket, release)
    log_group = names.get("log_group", None, required=False)
    return ops.deploy_request(doc, instances, action, release, log_group, checksum)


class _Seen:
    """The SSM runner, keeping each host's last result to show once the rollout ends."""

    def __init__(self, runner):
        self.runner, self.last = runner, {}

    def start(self, hosts, action, release, checksum):
        return self.runner.start(hosts, action, release, checksum)

    def poll(self, handle, hosts):
        results = self.runner.poll(handle, hosts)
        self.last.update({h: r for h, r in results.items() if r is not None})
        return results

    def cancel(self, handle):
        self.runner.cancel(handle)


def _host_state(state, runner: _Seen, host: str) -> str:
    if host in state.running:
        if state.stage is not None:
            return "leaving the load balancer" if state.stage == "draining" else "rejoining the load balancer"
        return "rolling back" if state.phase == "rolling-back" else "running"
    last = runner.last.get(host)
    return last.status if last else "waiting"


def _traffic(names, clients, hosts: list[str]):
    """The load balancer each batch leaves while it switches (devprod.ops.AlbTraffic), when the
    stack has one; None otherwise, with a note when several hosts suggest one was meant."""
    from devprod.ops import AlbTraffic

    if len(hosts) < 2:
        return None  # one host never leaves: there is nothing to leave to
    group = names.get("target_group", None, required=False)
    if not group:
        err.print("note: no target group known (DEVPROD_TARGET_GROUP_ARN or stack output "
                  "production.targetGroupArn): hosts switch without leaving a load balancer",
                  markup=False, highlight=False, soft_wrap=True)
        return None
    port = str(names.get("app_port", None, required=False) or "")
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise fail(f"DEVPROD_APP_PORT (or stack output production.appPort): {port!r} is not a port; "
                   f"it is needed with the target group {group}")
    traffic = AlbTraffic(clients.elbv2, str(group), int(port))
    missing = traffic.unregistered(hosts)
    if missing:
        raise fail(f"DEVPROD_TARGET_GROUP_ARN/DEVPROD_APP_PORT (or the stack outputs): {', '.join(missing)} "
                   f"not registered in {group} on port {port}; check both (a host left out by an interrupted "
                   "rollout: register it again first)")
    return traffic


@contextlib.contextmanager
def _says_who_is_out(state, traffic):
    """When the rollout stops on an error (AWS refusing a call, Ctrl-C), the hosts it had taken out
    of the load balancer are put back (best effort): say so, or give the command that does it."""
    from devprod.ops import put_back

    try:
        yield
    except BaseException:
        said = put_back(traffic, state.detached)
        if said:
            err.print(f"note: {said}", markup=False, highlight=False, soft_wrap=True)
        raise


def _roll_out(clients, request: dict, what: str, action: str, timeout: float, poll: float, batch: int,
              live_parameter: str, traffic=None) -> None:
    """Send the document a batch of hosts at a time (devprod.rollout), putting back what it updated when
    a host fails; progress on stderr, then each host's result; exit by how it ended."""
    import time

    from devprod import ops
    from devprod.render import heading, plain, progress
    from devprod.rollout import DONE, Rollout, run

    release, checksum = request["Parameters"]["release"][0] or None, request["Parameters"]["checksum"][0] or None
    previous = ops.rollback_target(clients.ssm, live_parameter, release)
    state = Rollout.new(release, checksum, request["InstanceIds"], batch=batch, timeout=timeout or 1, action=action,
                        previous=previous[0], previous_checksum=previous[1])
    runner = _Seen(ops.SsmRunner(clients.ssm, request["DocumentName"],
                                 (request.get("CloudWatchOutputConfig") or {}).get("CloudWatchLogGroupName"), "devprod CLI"))
    plain(out, what, wrap=True)
    with progress(err, "deploy document") as report, _says_who_is_out(state, traffic):
        state = run(state, runner, time.monotonic, time.sleep, poll,
                    on_update=lambda s: report({h: _host_state(s, runner, h) for h in s.hosts}), traffic=traffic)
    for host, result in runner.last.items():
        heading(out, f"{host}: {result.status}")
        plain(out, result.detail.strip() or "(no output)")
    if state.phase != DONE:
        timed_out = ("did not finish", "still draining from the load balancer")
        code = EXIT_TIMEOUT if any(t in (state.failure or "") for t in timed_out) else EXIT_FAILED
        raise fail(state.summary(), code)
    _record(clients, live_parameter, action, release, checksum)
    if state.in_place:
        err.print(f"note: {state.in_place_note()}", markup=False, highlight=False, soft_wrap=True)
    plain(out, f"{action} succeeded on {len(state.hosts)} host(s)")


def _record(clients, live_parameter: str, action: str, release, checksum) -> None:
    """Every host serves `release` now: what a new host deploys. A rollback to each host's own
    previous release names no sha, so the record cannot be updated: say so."""
    from devprod import ops

    if release and checksum:
        ops.record_live_release(clients.ssm, live_parameter, release, checksum)
        return
    err.print(f"note: {live_parameter} was not updated ({action} to each host's previous release names no "
              "sha); a host that boots now takes the release it names. Use --to SHA to record it.",
              markup=False, highlight=False, soft_wrap=True)


def _run_document(action: str, release: Optional[str], flag: str, stack: str, document: Optional[str],
                  artifact_bucket: Optional[str], yes: bool, dry_run: bool, timeout: float, poll: float,
                  region, profile, endpoint_url, batch: int = 1) -> None:
    if release is not None:
        from devprod.ops import parse_release

        parse_release(release, flag)  # a malformed sha is bad input before anything else is asked
    if not (yes or dry_run or _can_ask()):
        # typer's prompt would print "Aborted!" and exit 1; say what to do before touching AWS.
        raise fail(f"{action} asks for confirmation and standard input is not a terminal: pass --yes "
                   "(or --dry-run to see the request)")
    names = _names(stack)
    clients = _clients(names, region, profile, endpoint_url)
    request = _request(action, release, flag, stack, names, clients, document, artifact_bucket)
    hosts = request["InstanceIds"]
    if action == "rollback" and release is None and len(hosts) > 1:
        # Each host would go to its own previous release, and the live-release record could not follow.
        raise fail(f"--to: {len(hosts)} hosts serve {stack}; name the release to return to "
                   "(`devprod history` or the deploy log shows it)")
    batches = [hosts[i:i + batch] for i in range(0, len(hosts), batch)]
    traffic = _traffic(names, clients, hosts)
    if dry_run:
        group = traffic.target_group_arn if traffic is not None and len(batches) > 1 else None
        out.print_json(json.dumps({"dryRun": True, "batches": batches, "leavesTargetGroup": group,
                                   "sendCommand": request}))
        return
    shown = request["Parameters"]["release"][0] or "to the previous release"
    what = f"{action} {shown} on {', '.join(hosts)} ({stack}), {batch} host(s) at a time"
    if not yes and not typer.confirm(f"Run {what}?", default=False, err=True):
        raise fail("not confirmed; nothing sent", EXIT_BAD_INPUT)
    _roll_out(clients, request, what, action, timeout, poll, batch, live_release_parameter(stack), traffic)


YesOption = typer.Option(False, "--yes", help="Do not ask for confirmation (needed without a terminal).")
DryRunOption = typer.Option(False, "--dry-run", help="Print the SendCommand request; send nothing.")
TimeoutOption = typer.Option(2100.0, "--timeout", min=0, metavar="SECONDS", help="Seconds to wait for the hosts.")
PollOption = typer.Option(5.0, "--poll", min=0, metavar="SECONDS", help="Seconds between status polls.")
BatchOption = typer.Option(1, "--batch", min=1, max=10, metavar="N", help="Hosts deployed at once; the rest wait (rolling).")


@app.command()
def deploy(
    release: str = typer.Option(..., "--release", metavar="SHA", help="Release to deploy: its git sha, or a unique prefix of 7+ hex digits."),
    stack: str = StackOption,
    document: Optional[str] = DocumentOption,
    artifact_bucket: Optional[str] = ArtifactBucketOption,
    yes: bool = YesOption,
    dry_run: bool = DryRunOption,
    timeout: float = TimeoutOption,
    poll: float = PollOption,
    batch: int = BatchOption,
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """Emergency path: run the deploy document on production directly, bypassing the pipeline.

    The release must be published in the artifact bucket (archive and checksum).
    Exit 0 success, 1 failed (the hosts it reached rolled back), 2 bad input, not published
    or not confirmed, 3 AWS error, 4 timed out.
    """
    _run_document("deploy", release, "--release", stack, document, artifact_bucket, yes, dry_run, timeout, poll,
                  region, profile, endpoint_url, batch)


@app.command()
def rollback(
    to: Optional[str] = typer.Option(None, "--to", metavar="SHA", help="Release to return to: git sha or unique prefix (default: the previous release)."),
    stack: str = StackOption,
    document: Optional[str] = DocumentOption,
    artifact_bucket: Optional[str] = ArtifactBucketOption,
    yes: bool = YesOption,
    dry_run: bool = DryRunOption,
    timeout: float = TimeoutOption,
    poll: float = PollOption,
    batch: int = BatchOption,
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """Switch production back to the previous release (or --to SHA) with the same health gate.

    Without --to on a terminal (and without --yes or --dry-run), lists the
    releases the host has served and asks which one; Enter takes the previous.
    Exit codes as for deploy.
    """
    if to is None and not (yes or dry_run) and _can_ask():
        to = _pick_release(stack, region, profile, endpoint_url)
    _run_document("rollback", to, "--to", stack, document, artifact_bucket, yes, dry_run, timeout, poll,
                  region, profile, endpoint_url, batch)


def _pick_release(stack: str, region, profile, endpoint_url) -> Optional[str]:
    """The rollback picker: the host's releases from the deploy log, newest first."""
    from datetime import datetime, timezone

    from devprod import delivery_cli
    from devprod import trace as traces

    names = _names(stack)
    group = names.get("log_group", None, required=False)
    if not group:
        return None  # no deploy log named: the host's own previous release, as without a terminal
    choices = traces.rollback_choices(_clients(names, region, profile, endpoint_url), group,
                                      repository=(names.outputs.get("pipeline") or {}).get("repository"),
                                      github_token=os.environ.get("GITHUB_TOKEN"))
    chosen = delivery_cli.pick_release(choices, datetime.now(timezone.utc))
    if chosen is None:
        raise fail("no earlier release in the deploy log; pass --to SHA", EXIT_FAILED)
    return chosen


SESSION_MANAGER_PLUGIN_DOCS = "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html"


def _missing_tools() -> list[str]:
    """What a session through SSM needs on this machine and is not on PATH."""
    import shutil

    needed = {"ssh": "ssh", "aws": "the AWS CLI (aws)", "session-manager-plugin": "the Session Manager plugin (session-manager-plugin)"}
    return [label for tool, label in needed.items() if shutil.which(tool) is None]


def _self_command() -> str:
    """How a ProxyCommand runs this devprod: by name when it is on PATH, else this interpreter."""
    import shlex
    import shutil

    return "devprod" if shutil.which("devprod") else shlex.join([sys.executable, "-m", "devprod.cli"])


@app.command()
def ssh(
    name: str = typer.Argument(..., metavar="NAME", help="Developer whose box to open."),
    stack: str = typer.Option("dev", "--stack", metavar="STACK", help="Stack whose outputs list the developers' boxes."),
    instance_id: Optional[str] = typer.Option(None, "--instance-id", metavar="ID", help="Box instance id (default: stack output)."),
    region: Optional[str] = typer.Option(None, "--region", metavar="REGION", help="AWS region of the box (default: AWS_REGION, then the AWS config)."),
    print_only: bool = typer.Option(False, "--print", help="Print the ssh command instead of running it (needs no plugin)."),
) -> None:
    """SSH to a developer's box through SSM (AWS-StartSSHSession); a stopped box is started first.

    Exit: ssh's own exit code; 2 unknown developer or bad flag; 1 ssh, the AWS CLI or the Session Manager plugin missing.
    """
    import re
    import shlex

    from devprod.aws import check_region

    if not re.match(r"^[a-z][a-z0-9-]{1,20}$", name):
        raise fail(f"NAME {name!r} is not a developer name (lowercase letters, digits, '-')")
    target = instance_id or (_names(stack).developer(name) or {}).get("instanceId")
    if not target:
        raise fail(f"no instance id for developer {name!r} in stack {stack}: pass --instance-id ({_names(stack).note or 'not in outputs'})")
    if not re.match(r"^i-[0-9a-f]{8,17}$", target):
        raise fail(f"--instance-id {target!r} is not an EC2 instance id (i- and 8 or 17 hex digits)")
    region, source = (region, "--region") if region else (os.environ.get("AWS_REGION"), "AWS_REGION")
    if region:
        check_region(region, source)
    # The same path as `ssh NAME-dev`: start the box if it is stopped, then the SSM session.
    proxy = f"{_self_command()} box connect {name} --instance-id %h --port %p"
    argv = ["ssh", "-o", f"ProxyCommand={proxy}" + (f" --region {region}" if region else ""), f"{name}@{target}"]
    if print_only:
        out.print(shlex.join(argv), markup=False, highlight=False, soft_wrap=True)
        return
    missing = _missing_tools()
    if missing:
        raise fail(f"cannot connect, not on PATH: {', '.join(missing)} (plugin: {SESSION_MANAGER_PLUGIN_DOCS}); "
                   "--print shows the command without connecting", EXIT_FAILED)
    os.execvp("ssh", argv)


# ---------------------------------------------------------------- developer boxes

box_app = _App(cls=TyperGroup, no_args_is_help=True, rich_markup_mode=None,
               help="A developer's own box: status, start, stop, and start-on-connect for ssh.")
app.add_typer(box_app, name="box")
BoxName = typer.Argument(None, metavar="NAME", help="Developer whose box (default: DEVPROD_DEVELOPER, else your local user name).")
BoxStackOption = typer.Option("dev", "--stack", metavar="STACK", help="Stack of the box (its devprod:stack tag and outputs).")
BoxInstanceOption = typer.Option(None, "--instance-id", metavar="ID", help="Box instance id (default: stack output, else found by its developer tag).")
BoxTimeoutOption = typer.Option(300.0, "--timeout", envvar="DEVPROD_BOX_TIMEOUT", min=0, metavar="SECONDS",
                                help="Give up waiting after this long, exit 4 (env DEVPROD_BOX_TIMEOUT).")
BoxPollOption = typer.Option(5.0, "--poll", min=0, metavar="SECONDS", help="Seconds between state checks.")
BoxDryRunOption = typer.Option(False, "--dry-run", help="Say what would be done; change nothing.")


def _box_dry_run(clients, developer: str, target: str, verb: str) -> None:
    from devprod import box
    from devprod.render import plain

    state = box.describe(clients.ec2, developer, target)["State"]["Name"]
    plain(out, f"dry run: would {verb} {developer}'s box {target} (now {state}); nothing changed")


def _box_target(name: Optional[str], stack: str, instance_id: Optional[str], region: Optional[str],
                profile: Optional[str], endpoint_url: Optional[str]):
    """(developer, instance id or None, clients): NAME checked, the id from the flag or the stack outputs."""
    from devprod import box

    developer = box.check_name(*((name, "NAME") if name else box.default_developer()))
    names = _names(stack)
    if instance_id:
        box.check_instance_id(instance_id)
    target = instance_id or (names.developer(developer) or {}).get(contracts.OUT_INSTANCE_ID)
    return developer, target, _clients(names, region, profile, endpoint_url)


@box_app.command("status")
def box_status(
    name: Optional[str] = BoxName,
    stack: str = BoxStackOption,
    instance_id: Optional[str] = BoxInstanceOption,
    as_json: bool = JsonOption,
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """State, instance type, SSM agent ping status and uptime of a box.

    Exit 0, 2 (bad name, no such box), 3 (AWS refused or failed).
    """
    from devprod import box
    from devprod.render import aligned, plain

    developer, target, clients = _box_target(name, stack, instance_id, region, profile, endpoint_url)
    found = box.box_of(clients.ec2, clients.ssm, developer, target, stack if not target else None)
    if as_json:
        out.print_json(json.dumps(found.to_json()))
        return
    rows = [("developer", developer), ("instance", found.instance_id), ("state", found.state),
            ("type", found.instance_type), ("ssm agent", found.ping), ("uptime", box.uptime_text(found.uptime_seconds))]
    for line in aligned(("box", ""), rows)[1:]:
        plain(out, line)


@box_app.command("start")
def box_start(
    name: Optional[str] = BoxName,
    stack: str = BoxStackOption,
    instance_id: Optional[str] = BoxInstanceOption,
    timeout: float = BoxTimeoutOption,
    poll: float = BoxPollOption,
    dry_run: bool = BoxDryRunOption,
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """Start a box and wait until it runs and its SSM agent is Online (progress on stderr).

    Exit 0, 1 (the box is terminated), 2, 3 (AWS refused: not your box), 4 (timed out).
    """
    from devprod import box
    from devprod.render import plain

    developer, target, clients = _box_target(name, stack, instance_id, region, profile, endpoint_url)
    target = target or box.describe(clients.ec2, developer, None, stack)["InstanceId"]
    if dry_run:
        return _box_dry_run(clients, developer, target, "start")
    started = box.ensure_running(clients.ec2, clients.ssm, developer, target, box.Waiting(timeout, poll), _progress)
    plain(out, f"{developer}'s box {target}: running, SSM agent Online" + ("" if started else " (was already running)"))


@box_app.command("stop")
def box_stop(
    name: Optional[str] = BoxName,
    stack: str = BoxStackOption,
    instance_id: Optional[str] = BoxInstanceOption,
    wait: bool = typer.Option(False, "--wait", help="Wait until EC2 reports the box stopped."),
    timeout: float = BoxTimeoutOption,
    poll: float = BoxPollOption,
    dry_run: bool = BoxDryRunOption,
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """Stop a box (the home volume stays); returns at once unless --wait.

    Exit 0, 2, 3 (AWS refused: not your box), 4 (--wait timed out).
    """
    from devprod import box
    from devprod.render import plain

    developer, target, clients = _box_target(name, stack, instance_id, region, profile, endpoint_url)
    target = target or box.describe(clients.ec2, developer, None, stack)["InstanceId"]
    if dry_run:
        return _box_dry_run(clients, developer, target, "stop")
    state = box.stop(clients.ec2, developer, target, wait=wait, timeout=timeout, poll=poll)
    plain(out, f"{developer}'s box {target}: {state}")


@box_app.command("connect")
def box_connect(
    name: str = typer.Argument(..., metavar="NAME", help="Developer whose box (the ssh config block names it)."),
    instance_id: str = typer.Option(..., "--instance-id", metavar="ID", help="Box instance id (ssh's %h)."),
    port: int = typer.Option(22, "--port", min=1, max=65535, metavar="PORT", help="sshd port on the box (ssh's %p)."),
    timeout: float = BoxTimeoutOption,
    poll: float = BoxPollOption,
    print_only: bool = typer.Option(False, "--print", help="Print the session command instead of running it."),
    region: Optional[str] = RegionOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """ssh's ProxyCommand: start the box if stopped, wait for it, then become the SSM session.

    Progress goes to stderr (ssh shows it); stdout is ssh's tunnel. Exit: the
    session's own code; 1 the AWS CLI or Session Manager plugin missing, 2, 3,
    4 (timed out).
    """
    import shlex

    from devprod import box

    developer = box.check_name(name, "NAME")
    box.check_instance_id(instance_id)
    from devprod.outputs import StackNames

    # No `pulumi stack output` here: ssh waits for it, and the block names the region.
    clients = _clients(StackNames("dev", {}), region, profile, endpoint_url)
    box.ensure_running(clients.ec2, clients.ssm, developer, instance_id, box.Waiting(timeout, poll), _progress)
    argv = box.session_command(instance_id, port, clients.region)
    if print_only:
        out.print(shlex.join(argv), markup=False, highlight=False, soft_wrap=True)
        return
    missing = [label for label in _missing_tools() if "ssh" not in label.split()]
    if missing:
        raise fail(f"cannot open the session, not on PATH: {', '.join(missing)} (plugin: "
                   f"{SESSION_MANAGER_PLUGIN_DOCS})", EXIT_FAILED)
    os.execvp(argv[0], argv)


@app.command()
def bootstrap(
    region: str = typer.Option(..., "--region", metavar="REGION", help="Region of the state bucket and key."),
    bucket: str = typer.Option(..., "--bucket", metavar="BUCKET", help="State bucket name (globally unique)."),
    key_alias: str = typer.Option("alias/devprod-pulumi", "--key-alias", metavar="ALIAS", help="KMS alias for the secrets provider."),
    as_json: bool = JsonOption,
    profile: Optional[str] = ProfileOption,
    endpoint_url: Optional[str] = EndpointOption,
) -> None:
    """Create what Pulumi's own state needs: a private, versioned, encrypted, TLS-only bucket and a KMS key.

    Idempotent: a second run changes nothing. Exit 0, 2 bad name or region, 3 AWS error.
    """
    import re

    from devprod import ops
    from devprod.aws import Clients
    from devprod.render import plain

    if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket) or ".." in bucket:
        raise fail(f"--bucket {bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
    if not re.match(r"^(alias/)?[a-zA-Z0-9/_-]{1,250}$", key_alias) or key_alias.startswith(("alias/aws/", "aws/")):
        raise fail(f"--key-alias {key_alias!r} is not a KMS alias name (letters, digits, '/', '_', '-'; not aws/)")
    clients = Clients(region=region, profile=profile, endpoint_url=endpoint_url, region_source="--region")
    result = ops.bootstrap(clients.s3, clients.kms, region=region, bucket=bucket, key_alias=key_alias)
    if as_json:
        out.print_json(json.dumps(result.to_json()))
        return
    for line in result.changed or ["nothing changed: bucket and key were already in place"]:
        plain(out, f"- {line}")
    plain(out, f"bucket s3://{result.bucket}")
    plain(out, f"key {result.key_alias}:")
    plain(out, f"  {result.key_arn}")
    plain(out, "next:")
    plain(out, f"  {result.login}")
    # Split like a shell line so that it fits 80 columns and still pastes as one command.
    plain(out, "  " + result.stack_init.replace(" --secrets-provider", " \\\n      --secrets-provider"))


def _register_delivery_commands() -> None:
    from devprod import delivery_cli

    delivery_cli.register(app)


_register_delivery_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
