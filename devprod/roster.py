"""Editing the developer roster in `Pulumi.<stack>.yaml` without losing comments or order.

Every edit is validated with the same config model as `pulumi up` before the
file is written, so onboarding can never leave a stack file that fails later.
"""

from __future__ import annotations

import difflib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from devprod.errors import BadInput
from devprod.plan import parse_yaml

from components.config import NAMESPACE, ConfigError, parse_stack_config

ROSTER_KEY = "devprod:developers"


class RosterError(BadInput):
    """A roster edit that cannot be made; the message says why."""


@dataclass(frozen=True)
class RosterEdit:
    path: Path
    before: str
    after: str

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.before.splitlines(keepends=True),
                self.after.splitlines(keepends=True),
                fromfile=f"a/{self.path.name}",
                tofile=f"b/{self.path.name}",
            )
        )

    def write(self) -> None:
        # Write beside and rename, so an interrupted write never truncates the file.
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(self.after)
        tmp.replace(self.path)


def _round_trip() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a public key over two lines
    yaml.indent(mapping=2, sequence=4, offset=2)
    # Round-trip writes an explicit null as an empty value; keep the file's `null`.
    yaml.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return yaml


def _dump(yaml: YAML, document: Any) -> str:
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    return buffer.getvalue()


def _edit(path: Path, before: str, yaml: YAML, document: Any, project: str, stack: str) -> RosterEdit:
    """Dump the edited document and validate the whole stack config before anything is written."""
    after = _dump(yaml, document)
    plain = YAML(typ="safe").load(after) or {}
    raw = dict(plain.get("config") or {})
    for key, value in list(raw.items()):
        if isinstance(value, dict) and set(value) == {"secure"}:
            raw[key] = "[secret]"
    try:
        parse_stack_config(raw, project=project, stack=stack)
    except ConfigError as exc:
        raise RosterError("the roster would not validate:\n" + "\n".join(f"  - {p}" for p in exc.problems)) from None
    return RosterEdit(path, before, after)


def _load(path: Path) -> tuple[YAML, str, Any]:
    if not path.is_file():
        raise RosterError(f"{path.name} not found in {path.parent}")
    yaml = _round_trip()
    before = path.read_text()
    document = parse_yaml(path, before, yaml)
    if document is None:
        document = CommentedMap()
    if "config" not in document or document["config"] is None:
        document["config"] = CommentedMap()
    return yaml, before, document


def add_developer(path: Path, entry: dict[str, Any], *, project: str, stack: str) -> RosterEdit:
    """Append one developer; refuse a duplicate; validate the whole result."""
    yaml, before, document = _load(path)
    config = document["config"]
    production = f"{NAMESPACE}:production"
    if production in config and ROSTER_KEY not in config:
        # A production stack is administered through SSM only (S4): developer boxes live elsewhere.
        raise RosterError(f"{path.name} holds {production} and no roster; onboard into the dev stack (--stack dev)")
    roster = config.get(ROSTER_KEY)
    if roster is None:
        roster = CommentedSeq()
        config[ROSTER_KEY] = roster
    name = entry["name"]
    for existing in roster:
        if str(existing.get("name", "")).lower() == str(name).lower():
            raise RosterError(f"developer {name!r} is already in {path.name}")
    roster.append(CommentedMap(entry))
    return _edit(path, before, yaml, document, project, stack)


def remove_developer(path: Path, name: str, *, project: str, stack: str) -> RosterEdit:
    yaml, before, document = _load(path)
    roster = document["config"].get(ROSTER_KEY) or []
    for index, existing in enumerate(roster):
        if existing.get("name") == name:
            del roster[index]
            break
    else:
        known = ", ".join(str(d.get("name")) for d in roster) or "none"
        raise RosterError(f"developer {name!r} is not in {path.name} (developers: {known})")
    return _edit(path, before, yaml, document, project, stack)
