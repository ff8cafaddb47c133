"""Shared fixtures: the repository, the dev stack's raw config, and a plan runner."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from devprod.plan import Plan, load_stack_raw, plan_stack

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def _dev_raw() -> dict[str, Any]:
    raw, _ = load_stack_raw(ROOT, "dev")
    return raw


@pytest.fixture
def dev_raw(_dev_raw) -> dict[str, Any]:
    """A deep copy of Pulumi.dev.yaml's config that a test may change."""
    return copy.deepcopy(_dev_raw)


@pytest.fixture(scope="session")
def dev_plan() -> Plan:
    return plan_stack(ROOT, "dev")


def write_stack(folder: Path, stack: str, text: str) -> Path:
    """A throwaway project (program, components, scripts linked from the repo)."""
    for name in ("__main__.py", "Pulumi.yaml", "components", "scripts"):
        target = folder / name
        if not target.exists():
            target.symlink_to(ROOT / name)
    path = folder / f"Pulumi.{stack}.yaml"
    path.write_text(text)
    return path
