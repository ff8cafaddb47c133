"""docs/security.md defines every rule ID the repository cites, and every policy rule's ID."""

from __future__ import annotations

import re
import subprocess

from policy.rules import RULES
from policy.stack_rules import STACK_RULES
from tests.conftest import ROOT

RULE_ID = re.compile(r"\b([SDIR][1-9][0-9]?)b?\b")
DOC = ROOT / "docs" / "security.md"


def defined() -> set[str]:
    return set(re.findall(r"^\| ([SDIR][0-9]+) \|", DOC.read_text(), flags=re.M))


def cited() -> dict[str, set[str]]:
    """Rule IDs (S12, R2b, D9, ...) in the repository's tracked text files, by file."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found: dict[str, set[str]] = {}
    for name in files:
        if not name.endswith((".py", ".md", ".sh", ".yml", ".yaml")) or name == "docs/security.md":
            continue
        text = (ROOT / name).read_text(errors="replace")
        ids = set(RULE_ID.findall(text))
        if ids:
            found[name] = ids
    return found


def test_every_cited_rule_id_is_defined():
    known = defined()
    missing = {name: sorted(ids - known) for name, ids in cited().items() if ids - known}
    assert missing == {}


def test_every_policy_rule_is_documented_with_its_name():
    text = DOC.read_text()
    known = defined()
    for rule in (*RULES, *STACK_RULES):
        assert rule.id.rstrip("b") in known, rule.id
        assert f"`{rule.name}`" in text, rule.name


def test_the_document_defines_each_id_once():
    ids = re.findall(r"^\| ([SDIR][0-9]+) \|", DOC.read_text(), flags=re.M)
    assert len(ids) == len(set(ids))
