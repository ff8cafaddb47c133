"""Output helpers shared by the CLI's human views."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def print_wide(console: Console, renderable: Any, width: int = 200) -> None:
    """Print at least `width` columns wide: tables and trees must not fold or crop
    ids and properties when the output goes to a file, a pipe or a PR comment."""
    wide = Console(file=console.file, width=max(console.width, width), force_terminal=console.is_terminal)
    wide.print(renderable)
