"""Stack files are read by libyaml (ruamel.yaml.clib) for speed, and by ruamel's pure parser
for errors: both must give the same values, and every error the pure parser's words."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from devprod import plan as plan_module
from devprod.plan import YamlFileError, parse_yaml
from tests.conftest import STACKS

# Where YAML 1.1 and 1.2 part ways, numbers and times that look like other things, and the
# rest of what a hand-edited stack file holds.
EDGES = """\
config:
  words: [yes, no, on, off, y, n, true, True, TRUE, false, FALSE, null, Null, ~, '']
  octal: [0755, 0o755, 0x1F, 010, 08]
  sexagesimal:
    - 1:20
    - 20:00
    - 190:20:30
    - '08:00'
  dates:
    - 2024-01-01
    - 2024-01-01T08:00:00Z
    - 2024-1-1
  numbers: [.5, 1e3, 1.0e+3, 1_000, -0, +12, .inf, -.Inf, 12.0, 3.]
  text: ["a\\tb", 'it''s', "\\u00e9t\\u00e9", plain words, "  spaced  ", '#not a comment']
  block: |
    line one
      indented
  folded: >-
    folded
    text
  empty:
  anchor: &base {a: 1, b: [x, y]}
  alias: *base
  merged:
    <<: *base
    b: overridden
  42: a number key
  nested: [[1, 2], {k: v}, []]
  aws:region: eu-central-1
"""


def _pure(text: str):
    return YAML(typ="safe", pure=True).load(text)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b if not isinstance(a, (dict, list)) else (
        type(a) is type(b) and len(a) == len(b) and (
            all(_same(x, y) for x, y in zip(a, b)) if isinstance(a, list)
            else list(a) == list(b) and all(_same(a[k], b[k]) for k in a)))


def test_libyaml_is_installed_and_reads_stack_files():
    assert plan_module._C_PARSER is not None, "ruamel.yaml.clib is in requirements.txt"


@pytest.mark.parametrize("name", ["edges", *sorted(p.name for p in STACKS.glob("Pulumi.*.yaml"))])
def test_libyaml_and_the_pure_parser_read_the_same_values(name):
    text = EDGES if name == "edges" else (STACKS / name).read_text()
    fast = YAML(typ="safe").load(text)  # the C path's own reading: it must not fail here
    assert _same(fast, _pure(text)) and _same(parse_yaml(Path(name), text), fast), name


def test_the_edge_cases_are_read_as_yaml_1_2():
    config = parse_yaml(Path("x.yaml"), EDGES)["config"]
    assert config["words"][:6] == ["yes", "no", "on", "off", "y", "n"]
    assert config["octal"] == [755, 0o755, 0x1F, 10, 8]
    assert config["sexagesimal"][:2] == ["1:20", "20:00"]
    assert config["merged"] == {"a": 1, "b": "overridden"}


def test_a_yaml_directive_is_left_to_the_pure_parser(monkeypatch):
    loaders: list = []
    real = plan_module.YAML

    def spy(*args, **kwargs):
        loaders.append(kwargs.get("pure", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(plan_module, "YAML", spy)
    assert parse_yaml(Path("x.yaml"), "%YAML 1.1\n---\nflag: yes\n") == _pure("%YAML 1.1\n---\nflag: yes\n")
    assert loaders == [True]
    loaders.clear()
    parse_yaml(Path("x.yaml"), "flag: yes\n")
    assert loaders == [False]  # the C path, and it succeeded


def test_what_libyaml_refuses_and_the_pure_parser_reads_is_read_as_the_pure_parser_reads_it():
    text = "times: [1:20, 20:00]\n"  # libyaml: a plain ':' in a flow sequence is an error
    with pytest.raises(Exception):
        YAML(typ="safe").load(text)
    assert parse_yaml(Path("x.yaml"), text) == {"times": ["1:20", "20:00"]} == _pure(text)


@pytest.mark.parametrize("text", [
    "a: [1, 2\n",
    "a:\n\tb: 1\n",
    "name: bob: x\n",
    "a: 1\na: 2\n",
    "a: *missing\n",
    "- a\nb: c\n",
    "a: 'unclosed\n",
])
def test_every_error_is_the_pure_parsers(text):
    with pytest.raises(YamlFileError) as fast:
        parse_yaml(Path("Pulumi.dev.yaml"), text)
    with pytest.raises(YamlFileError) as pure:
        parse_yaml(Path("Pulumi.dev.yaml"), text, YAML(typ="safe", pure=True))
    assert str(fast.value) == str(pure.value) and str(fast.value).startswith("Pulumi.dev.yaml:")


@pytest.mark.parametrize("text", [
    "config:\n  aws:region:\teu-central-1\n",  # libyaml reads a tab after ':'; the pure parser refuses it
    "a: 1\t# comment\n",
    "a\tb: 1\n",
    "a: x\x85b: y\n",  # NEL: a line break to libyaml, not to the pure parser
    "a: 1 # \u2028 b: 2\n",
    "a: &b 1\nc: [*b:]\n",  # an alias then ':' in a flow sequence
])
def test_what_the_pure_parser_refuses_plan_refuses_too(text):
    """So `plan` never reads a file that `onboard` and `offboard` refuse."""
    with pytest.raises(YamlFileError) as fast:
        parse_yaml(Path("Pulumi.dev.yaml"), text)
    with pytest.raises(YamlFileError) as pure:
        parse_yaml(Path("Pulumi.dev.yaml"), text, YAML(typ="safe", pure=True))
    assert str(fast.value) == str(pure.value)


def test_a_file_nested_too_deeply_is_one_line():
    text = "a: " + "[" * 3000 + "]" * 3000 + "\n"
    with pytest.raises(YamlFileError, match=r"^Pulumi.dev.yaml: nested too deeply to read$"):
        parse_yaml(Path("Pulumi.dev.yaml"), text, YAML(typ="safe", pure=True))


def test_the_roster_commands_and_the_workflow_rules_read_what_libyaml_refuses(tmp_path):
    """A schedule written `stopAt: 19:00` in flow style, and a workflow matrix of `node:18`:
    a plain ':' in a flow collection, which libyaml refuses and the pure parser reads."""
    from devprod.roster import remove_developer
    from policy import workflows

    text = (STACKS / "Pulumi.dev.yaml").read_text()
    names = [d["name"] for d in _pure(text)["config"]["devprod:developers"]]
    assert len(names) >= 2
    text = text.replace("config:\n", "config:\n  devprod:tags: {window: 19:00}\n", 1)
    with pytest.raises(Exception):
        YAML(typ="safe").load(text)
    (tmp_path / "Pulumi.dev.yaml").write_text(text)
    edit = remove_developer(tmp_path / "Pulumi.dev.yaml", names[0], project="devprod", stack="dev")
    assert names[0] not in [d["name"] for d in _pure(edit.after)["config"]["devprod:developers"]]
    assert workflows.load("jobs:\n  t:\n    strategy: {matrix: {image: [node:18, node:20]}}\n") == {
        "jobs": {"t": {"strategy": {"matrix": {"image": ["node:18", "node:20"]}}}}}


@pytest.mark.parametrize("depth", [3, 49, 50, 51, 3000])
def test_a_deep_document_gets_the_pure_parsers_verdict(depth):
    """libyaml reads any depth; the pure parser (the roster commands') runs out of stack."""
    text = "a: " + "[" * depth + "1" + "]" * depth + "\n"
    try:
        expected = _pure(text)
    except RecursionError:
        with pytest.raises(YamlFileError, match="nested too deeply"):
            parse_yaml(Path("Pulumi.dev.yaml"), text)
        assert depth == 3000
    else:
        assert parse_yaml(Path("Pulumi.dev.yaml"), text) == expected
