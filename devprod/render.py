"""Output helpers shared by the CLI's human views.

On a terminal they draw with rich (tables, rules, a live progress view) within
the terminal's width; in a pipe or a file they print plain lines, with no box
characters to strip and nothing redrawn.
"""

from __future__ import annotations

import textwrap
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from rich import box
from rich.console import Console
from rich.table import Table


def print_wide(console: Console, renderable: Any, width: int = 200) -> None:
    """Print at least `width` columns wide: tables and trees must not fold or crop
    ids and properties when the output goes to a file, a pipe or a PR comment."""
    wide = Console(file=console.file, width=max(console.width, width), force_terminal=console.is_terminal)
    wide.print(renderable)


# Prose in a pipe or a file (a PR comment, a log) is filled to this width.
PIPE_WIDTH = 79


def plain(console: Console, text: str, *, wrap: bool = False) -> None:
    """Text exactly as given, no markup or highlighting; with `wrap`, prose wraps at words on a terminal.

    Without `wrap` a line is never folded (commands and ids stay whole for copying and grep).
    """
    console.print(text, markup=False, highlight=False, soft_wrap=not (wrap and console.is_terminal))


def prose(console: Console, text: str) -> None:
    """A paragraph: wrapped by rich on a terminal, filled to PIPE_WIDTH columns in a pipe or file.

    Lines break only at spaces, so an id, path or flag in the text stays whole.
    Not for rows or records (status lines, ids): those use `plain`, never folded.
    """
    if not console.is_terminal:
        text = textwrap.fill(text, PIPE_WIDTH, break_long_words=False, break_on_hyphens=False)
    plain(console, text, wrap=True)


def heading(console: Console, title: str) -> None:
    """A section title: a rule on a terminal, `==> title <==` (as tail(1) heads files) in a pipe."""
    if console.is_terminal:
        console.rule(title, style="dim")
    else:
        plain(console, f"==> {title} <==")


def aligned(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Rows as plain lines, columns padded to line up, two spaces apart; the last column is not padded."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]


@contextmanager
def progress(console: Console, title: str) -> Iterator[Callable[[dict[str, str]], None]]:
    """Report {item: status} while work runs, on `console` (meant to be stderr).

    A terminal gets a live table that disappears when the work ends; a pipe
    gets one timestamped line per item whose status changed.
    """
    if console.is_terminal:
        from rich.live import Live

        with Live(console=console, refresh_per_second=4, transient=True) as view:
            yield lambda states: view.update(_table(title, ("instance", "status"), list(states.items())))
        return
    seen: dict[str, str] = {}

    def report(states: dict[str, str]) -> None:
        for item, status in states.items():
            if seen.get(item) != status:
                seen[item] = status
                plain(console, f"{time.strftime('%H:%M:%S')} {item}: {status}")

    yield report


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A rich table without side borders that folds long cells to fit the terminal."""
    view = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for header in headers:
        view.add_column(header, overflow="fold")
    for row in rows:
        view.add_row(*["" if c is None else str(c) for c in row])
    return view
