"""Editing the developer roster in `Pulumi.<stack>.yaml` without touching anything else.

An edit is made on the file's text: the new entry is inserted after the last
one (in the file's own indentation and list style), a removed entry's lines
are cut out, and every other byte stays as it was. Only shapes that cannot
be edited that way (a roster written in flow style, say) go through a
comment-keeping YAML round trip. Either way the whole stack config is
validated with the same model as `pulumi up` before the file is written, so
onboarding can never leave a stack file that fails later.
"""

from __future__ import annotations

import difflib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from devprod.errors import BadInput, OperationFailed
from devprod.plan import parse_yaml

from components.config import NAMESPACE, ConfigError, parse_stack_config

ROSTER_KEY = "devprod:developers"


class RosterError(BadInput):
    """A roster edit that cannot be made; the message names the file and says why."""


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
        try:
            tmp.write_text(self.after)
            tmp.replace(self.path)
        except OSError as exc:
            raise OperationFailed(f"cannot write {self.path.name} in {self.path.parent}: {exc.strerror}") from None


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


def _validated(path: Path, before: str, after: str, project: str, stack: str) -> RosterEdit:
    """The edit, once the whole stack config it leaves validates."""
    plain = parse_yaml(path, after) or {}  # read as plan reads it
    raw = dict(plain.get("config") or {})
    for key, value in list(raw.items()):
        if isinstance(value, dict) and set(value) == {"secure"}:
            raw[key] = "[secret]"
    try:
        parse_stack_config(raw, project=project, stack=stack)
    except ConfigError as exc:
        raise RosterError(f"{path.name} would not validate: " + "; ".join(exc.problems)) from None
    return RosterEdit(path, before, after)


def _load(path: Path) -> tuple[str, Any, Any]:
    """The file's text, its round-trip document and its config mapping (refusing other shapes)."""
    if not path.is_file():
        raise RosterError(f"{path.name} not found in {path.parent}")
    before = path.read_text()
    document = parse_yaml(path, before, _round_trip())
    if document is None:
        document = CommentedMap()
    if not isinstance(document, CommentedMap):
        raise RosterError(f"{path.name}: the top level must be a mapping holding config:")
    if document.get("config") is None:
        document["config"] = CommentedMap()
    config = document["config"]
    if not isinstance(config, CommentedMap):
        raise RosterError(f"{path.name}: config must be a mapping, got {type(config).__name__}")
    roster = config.get(ROSTER_KEY)
    if roster is not None and not isinstance(roster, CommentedSeq):
        raise RosterError(f"{path.name}: {ROSTER_KEY} must be a list of developers, got {roster!r}")
    return before, document, config


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index after the last content line of the block at `start`: the lines indented deeper than `indent`.

    Comments and blank lines after that line belong to whatever follows.
    """
    end = start + 1
    for index in range(start + 1, len(lines)):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if _indent(lines[index]) <= indent:
            break
        end = index + 1
    return end


def _prefers_flow(node: Any) -> bool:
    """Whether the file writes short lists as `[a, b]`: the style of most of its lists of scalars."""
    votes: list[bool] = []

    def walk(value: Any) -> None:
        if isinstance(value, CommentedSeq):
            if value and all(not isinstance(v, (CommentedMap, CommentedSeq)) for v in value):
                votes.append(bool(value.fa.flow_style()))
            for item in value:
                walk(item)
        elif isinstance(value, CommentedMap):
            for item in value.values():
                walk(item)

    walk(node)
    return bool(votes) and sum(votes) * 2 >= len(votes)


def _entry_map(entry: dict[str, Any], flow: bool) -> CommentedMap:
    """The entry as ruamel nodes, its lists in the file's list style."""
    item = CommentedMap()
    for key, value in entry.items():
        if isinstance(value, list):
            value = CommentedSeq(value)
            if flow:
                value.fa.set_flow_style()
        item[key] = value
    return item


def _entry_lines(entry: dict[str, Any], key_col: int, dash_col: int, content_col: int, flow: bool) -> str:
    """The entry as the roster's next item, in the file's indentation and list style."""
    item = _entry_map(entry, flow)
    yaml = YAML()
    yaml.width = 4096  # never fold a public key over two lines
    yaml.indent(mapping=2, sequence=content_col - key_col, offset=dash_col - key_col)
    dumped = _dump(yaml, {ROSTER_KEY: [item]}).splitlines(keepends=True)[1:]
    return "".join(" " * key_col + line for line in dumped)


def _splice(text: str, at: int, insert: str, drop: int = 0) -> str:
    """`text` with lines [at, at + drop) replaced by `insert`."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return "".join(lines[:at]) + insert + "".join(lines[at + drop:])


def _key_line(lines: list[str], config: Any) -> tuple[int, str] | None:
    """The roster key's line number and its `    devprod:developers:` head, when written plainly."""
    line, col = config.lc.key(ROSTER_KEY)
    head = " " * col + ROSTER_KEY + ":"
    return (line, head) if lines[line].startswith(head) else None


def _added_by_text(before: str, config: Any, entry: dict[str, Any], flow: bool) -> str | None:
    """The file with `entry` inserted after the last developer; None when the shape needs a round trip."""
    lines = before.splitlines(keepends=True)
    roster = config.get(ROSTER_KEY)
    if roster:
        dash_col = config.lc.value(ROSTER_KEY)[1]
        last, content_col = roster.lc.item(len(roster) - 1)
        if roster.fa.flow_style() or lines[last][dash_col:dash_col + 1] != "-":
            return None
        snippet = _entry_lines(entry, config.lc.key(ROSTER_KEY)[1], dash_col, content_col, flow)
        return _splice(before, _block_end(lines, last, dash_col), snippet)
    if ROSTER_KEY in config:  # present but empty: `devprod:developers: []` (or null)
        found = _key_line(lines, config)
        value, _, comment = lines[found[0]][len(found[1]):].partition("#") if found else ("?", "", "")
        if value.strip() not in ("", "[]", "null", "~"):
            return None
        key_col = config.lc.key(ROSTER_KEY)[1]
        head = found[1] + (f"  #{comment}" if comment else "\n")
        return _splice(before, found[0], head + _entry_lines(entry, key_col, key_col + 2, key_col + 4, flow), drop=1)
    if not config:
        return None
    keys = list(config)
    key_col = config.lc.key(keys[0])[1]
    end = _block_end(lines, config.lc.key(keys[-1])[0], key_col)
    head = " " * key_col + ROSTER_KEY + ":\n"
    return _splice(before, end, head + _entry_lines(entry, key_col, key_col + 2, key_col + 4, flow))


def _added_by_round_trip(document: Any, config: Any, entry: dict[str, Any], flow: bool) -> str:
    item = _entry_map(entry, flow)
    if config.get(ROSTER_KEY) is None:
        config[ROSTER_KEY] = CommentedSeq()
    config[ROSTER_KEY].append(item)
    return _dump(_round_trip(), document)


def _check_access(path: Path, config: Any, entry: dict[str, Any]) -> None:
    """CIDRs only mean something for a box reached by direct SSH (an SSM box opens no port)."""
    defaults = config.get(f"{NAMESPACE}:devDefaults")
    default = defaults.get("access", "ssm") if isinstance(defaults, dict) else "ssm"
    access = entry.get("access") or default
    if entry.get("allowedSshCidrs") and access != "ssh":
        cidrs = " ".join(entry["allowedSshCidrs"])
        where = "--access" if entry.get("access") else f"--access (devDefaults.access in {path.name})"
        raise RosterError(f"--cidr {cidrs} needs --access ssh; {where} is {access!r} and an SSM box opens no port")


def add_developer(path: Path, entry: dict[str, Any], *, project: str, stack: str) -> RosterEdit:
    """Append one developer; refuse a duplicate; validate the whole result."""
    before, document, config = _load(path)
    production = f"{NAMESPACE}:production"
    if production in config and ROSTER_KEY not in config:
        # A production stack is administered through SSM only (S4): developer boxes live elsewhere.
        raise RosterError(f"{path.name} holds {production} and no roster; onboard into the dev stack (--stack dev)")
    name = str(entry["name"])
    for existing in config.get(ROSTER_KEY) or []:
        if isinstance(existing, dict) and str(existing.get("name", "")).lower() == name.lower():
            raise RosterError(f"developer {name!r} is already in {path.name}")
    _check_access(path, config, entry)
    flow = _prefers_flow(config)
    after = _added_by_text(before, config, entry, flow)
    if after is None:
        after = _added_by_round_trip(document, config, entry, flow)
    return _validated(path, before, after, project, stack)


def _removed_by_text(before: str, config: Any, index: int) -> str | None:
    """The file without the roster's item `index`; an emptied roster is written `[]`."""
    lines = before.splitlines(keepends=True)
    roster = config[ROSTER_KEY]
    dash_col = config.lc.value(ROSTER_KEY)[1]
    start = roster.lc.item(index)[0]
    if roster.fa.flow_style() or lines[start][dash_col:dash_col + 1] != "-":
        return None
    end = _block_end(lines, start, dash_col)
    if len(roster) > 1:
        return "".join(lines[:start] + lines[end:])
    found = _key_line(lines, config)
    if found is None or not lines[found[0]][len(found[1]):].lstrip(" ").startswith(("#", "\n")):
        return None
    key_line = found[1] + " []" + lines[found[0]][len(found[1]):]
    return "".join(lines[:found[0]] + [key_line] + lines[found[0] + 1:start] + lines[end:])


def remove_developer(path: Path, name: str, *, project: str, stack: str) -> RosterEdit:
    before, document, config = _load(path)
    roster = config.get(ROSTER_KEY) or []
    names = [str(d.get("name")) if isinstance(d, dict) else repr(d) for d in roster]
    if name not in names:
        raise RosterError(f"developer {name!r} is not in {path.name} (developers: {', '.join(names) or 'none'})")
    index = names.index(name)
    after = _removed_by_text(before, config, index)
    if after is None:
        del roster[index]
        after = _dump(_round_trip(), document)
    return _validated(path, before, after, project, stack)
