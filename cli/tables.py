"""Tables for people: rich's tables, with colour and rules on a terminal, plain aligned columns in a pipe or a log.

Cell values come from files and are shown as text, never interpreted as rich markup.
"""
from __future__ import annotations

import io
import sys

#: colours for status words on a terminal
STYLES = {"new": "green", "moved": "yellow", "removed": "red", "kept": "dim", "ok": "green", "mismatch": "yellow",
          "unreachable": "red"}


def render_table(header: tuple, rows: list[tuple], tty: bool | None = None) -> str:
    # imported here: commands that print JSON or YAML (plan --json, lock) never load rich (30 ms)
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    tty = sys.stdout.isatty() if tty is None else tty
    table = Table(box=box.SIMPLE_HEAD if tty else None, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0),
                  header_style="bold" if tty else "")
    for name in header:
        table.add_column(name, no_wrap=True)
    for row in rows:
        cells = []
        for value in row:
            text = str(value)
            style = STYLES.get(text.split(" ", 1)[0], "") if tty else ""
            cells.append(Text(text, style=style))
        table.add_row(*cells)
    console = Console(file=io.StringIO(), force_terminal=tty, no_color=not tty, color_system="standard" if tty else None,
                      width=100_000 if not tty else None, highlight=False, emoji=False)
    console.print(table)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines()).strip("\n")
