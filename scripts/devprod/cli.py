"""The `devprod` command line.

Exit codes (all commands):
  0  success
  1  the operation failed (AWS or the host answered with a failure)
  2  bad input: invalid stack config, unknown developer, bad flag
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _project(project_dir: Optional[Path]) -> Path:
    from devprod.plan import find_project_dir

    try:
        folder = find_project_dir(project_dir)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return folder


ProjectDir = typer.Option(None, "--project-dir", help="Folder holding Pulumi.yaml (default: found from the current folder).")


@app.command()
def plan(
    stack: str = typer.Argument(..., help="Stack name: reads Pulumi.STACK.yaml."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON (resources, options, outputs)."),
    project_dir: Optional[Path] = ProjectDir,
) -> None:
    """Run the program offline under recording mocks: no cloud calls, no credentials.

    Exit 0 when the plan ran, 2 when the stack config is invalid.
    """
    folder = _project(project_dir)
    from components.config import ConfigError
    from devprod.plan import plan_stack
    from devprod.plan_view import render

    try:
        result = plan_stack(folder, stack)
    except ConfigError as exc:
        err.print(f"[red]Pulumi.{stack}.yaml is invalid:[/]", highlight=False)
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    if as_json:
        out.print_json(json.dumps(result.to_json()))
    else:
        render(result, out)


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
    folder = _project(project_dir)
    from devprod.plan import project_name, stack_file
    from devprod.roster import RosterError, add_developer

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
    try:
        edit = add_developer(stack_file(folder, stack), entry, project=project_name(folder), stack=stack)
    except RosterError as exc:
        raise fail(str(exc)) from None
    if dry_run:
        out.print(edit.diff(), markup=False, highlight=False)
        out.print("dry run: nothing written")
        return
    edit.write()
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
    from devprod.roster import RosterError, remove_developer

    try:
        edit = remove_developer(stack_file(folder, stack), name, project=project_name(folder), stack=stack)
    except RosterError as exc:
        raise fail(str(exc)) from None
    if dry_run:
        out.print(edit.diff(), markup=False, highlight=False)
        out.print("dry run: nothing written")
        return
    edit.write()
    out.print(f"Removed {name} from {edit.path.name}.", highlight=False)
    out.print(
        f"On `pulumi up --stack {stack}` the box, its role and schedules are deleted. The home "
        f"volume ({name}-home, tag devprod:home-of={name}) is retained in the account "
        "(retainOnDelete): re-onboarding does not reattach it automatically; delete it with "
        "`aws ec2 delete-volume` once its data is no longer needed.",
        highlight=False,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
