"""Tables of the command line that read well wherever they go.

On a terminal they are rich tables fitted to its width: when the columns do not fit side
by side they wrap, the ones that do not fit going to a further table below (each repeating
the key columns, such as the row number), so no column is dropped and no figure cut short;
a terminal too narrow for even one column beside the keys folds its cells. Piped or written
to a file they are plain text, every cell whole, at whatever width the longest row needs; or
Markdown on request (`--table markdown`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

FORMATS = ("auto", "rich", "plain", "markdown")


@dataclass
class Table:
    title: str
    columns: list[str]
    right: set[int] = field(default_factory=set)  # indices of right-aligned (numeric) columns
    keys: tuple[int, ...] = (0,)  # columns repeated in every block when the columns wrap
    rows: list[list[str]] = field(default_factory=list)
    footer: list[list[str]] = field(default_factory=list)  # totals, set apart by a rule

    def add(self, *cells) -> None:
        self.rows.append([str(c) for c in cells])


def add_format_option(parser) -> None:
    parser.add_argument("--table", choices=FORMATS, default="auto",
                        help="table style: rich on a terminal, plain text when piped (auto, the default), "
                             "or Markdown")


def resolve(fmt: str, stream=None) -> str:
    if fmt != "auto":
        return fmt
    stream = stream or sys.stdout
    return "rich" if hasattr(stream, "isatty") and stream.isatty() else "plain"


def _pad(cell: str, width: int, right: bool) -> str:
    return cell.rjust(width) if right else cell.ljust(width)


def plain(table: Table) -> str:
    rows = [table.columns] + table.rows + table.footer
    widths = [max(len(r[i]) for r in rows) for i in range(len(table.columns))]
    line = lambda r: "  ".join(_pad(c, w, i in table.right) for i, (c, w) in enumerate(zip(r, widths))).rstrip()  # noqa: E731
    rule = "  ".join("-" * w for w in widths)
    out = [table.title, line(table.columns), rule] + [line(r) for r in table.rows]
    if table.footer:
        out += [rule] + [line(r) for r in table.footer]
    return "\n".join(out)


def markdown(table: Table) -> str:
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    out = [f"**{esc(table.title)}**", "", "| " + " | ".join(map(esc, table.columns)) + " |",
           "|" + "|".join("---:" if i in table.right else "---" for i in range(len(table.columns))) + "|"]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in table.rows + table.footer]
    return "\n".join(out)


# What a rich table adds to each column (padding and a border), and once per table.
RICH_COLUMN_EXTRA, RICH_TABLE_EXTRA = 3, 1


def column_blocks(table: Table, width: int) -> list[list[int]]:
    """The columns split into blocks that each fit `width` when rendered by rich, every
    block starting with the key columns."""
    natural = [max(len(c) for c in [name] + [r[i] for r in table.rows + table.footer])
               for i, name in enumerate(table.columns)]
    cost = lambda cols: RICH_TABLE_EXTRA + sum(natural[i] + RICH_COLUMN_EXTRA for i in cols)  # noqa: E731
    keys = [k for k in table.keys if k < len(natural)]
    blocks, current = [], list(keys)
    for i in range(len(natural)):
        if i in keys:
            continue
        if len(current) > len(keys) and cost(current + [i]) > width:
            blocks.append(current)
            current = list(keys)
        current.append(i)
    blocks.append(current)
    return blocks


def rich_table(table: Table, columns: list[int] | None = None, title: str | None = None):
    from rich.table import Table as RichTable
    columns = list(range(len(table.columns))) if columns is None else columns
    t = RichTable(title=table.title if title is None else title)
    for i in columns:
        # Cells fold (wrap anywhere) rather than end in an ellipsis, so no figure is ever cut.
        t.add_column(table.columns[i], justify="right" if i in table.right else "left", overflow="fold")
    for r in table.rows:
        t.add_row(*(r[i] for i in columns))
    if table.footer:
        t.add_section()
        for r in table.footer:
            t.add_row(*(r[i] for i in columns))
    return t


def emit(table: Table, fmt: str = "auto", console=None) -> None:
    """Prints `table` in `fmt` (see FORMATS); `console`, a rich Console, is used for rich
    tables and its file for the others."""
    fmt = resolve(fmt, getattr(console, "file", None))
    if fmt == "rich":
        from rich.console import Console
        console = console or Console()
        blocks = column_blocks(table, console.width)
        for n, columns in enumerate(blocks):
            more = f" ({n + 1}/{len(blocks)})" if len(blocks) > 1 else ""
            console.print(rich_table(table, columns, table.title + more))
        return
    text = plain(table) if fmt == "plain" else markdown(table)
    stream = getattr(console, "file", None) or sys.stdout
    print(text + "\n", file=stream, flush=True)
