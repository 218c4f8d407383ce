"""The result table every benchmark in bench/ prints: one row a measure, Cairn beside JS."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Row", "fmt_num", "print_tables", "render", "render_markdown"]

ONE_DECIMAL = {"B/block", "ms"}


@dataclass
class Row:
    measure: str
    unit: str
    cairn: float | None
    js: float | None
    ratio: float | None
    target: str
    verdict: str


def fmt_num(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    return f"{v:,.1f}" if unit in ONE_DECIMAL else f"{v:,.0f}"


def _ratio(r: Row) -> str:
    return "-" if r.ratio is None else f"{r.ratio:.2f}x"


def render(rows: list[Row]) -> str:
    head = ["measure", "unit", "Cairn", "JS", "ratio", "target", "verdict"]
    body = [[r.measure, r.unit, fmt_num(r.cairn, r.unit), fmt_num(r.js, r.unit), _ratio(r),
             r.target, r.verdict] for r in rows]
    widths = [max(len(line[k]) for line in [head, *body]) for k in range(len(head))]
    right = {2, 3, 4}

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(w) if k in right else cell.ljust(w)
                         for k, (cell, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(b) for b in body)])


def render_markdown(rows: list[Row]) -> str:
    out = ["| measure | unit | Cairn | JS | ratio | target | verdict |",
           "|---|---|--:|--:|--:|---|---|"]
    for r in rows:
        out.append(f"| {r.measure} | {r.unit} | {fmt_num(r.cairn, r.unit)} | "
                   f"{fmt_num(r.js, r.unit)} | {_ratio(r)} | {r.target} | {r.verdict} |")
    return "\n".join(out)


def print_tables(rows: list[Row], markdown: bool) -> None:
    """The table on stdout, and with ``markdown`` the same again in Markdown."""
    print(render(rows))
    if markdown:
        print()
        print(render_markdown(rows))
