"""What a person sees of the demo: the live table (rich) and the summary printed at the end.

Both read a :class:`~cairn_demo.system.Demo`'s :meth:`~cairn_demo.system.Demo.view` and
:class:`~cairn_demo.system.Summary`; nothing here starts or stops anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cairn_demo.system import Demo, Summary

__all__ = ["print_summary", "render"]


def _age(a: float | None) -> str:
    return "-" if a is None else f"{a:.0f}s" if a < 120 else f"{a / 60:.0f}m"


def render(demo: Demo, view: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"Cairn demo: gateway API {demo.api}", expand=False)
    for c in ("device", "stream", "value", "unit", "age", "verified", "blocks"):
        t.add_column(c, justify="right" if c in ("value", "age", "blocks") else "left")
    for r in view["rows"]:
        v = r["value"]
        t.add_row(r["device"], r["stream"], f"{v:.2f}" if isinstance(v, float) else str(v),
                  r["unit"] or "",
                  _age(r["age"]), Text("yes", style="green") if r["verified"]
                  else Text("NO", style="bold red"), f"{r['blocks']:,}")
    s: Summary = view["summary"]
    rejects = ", ".join(f"{k} {n}" for k, n in s.rejected.most_common()) or "none"
    foot = Text(
        f"simulator: {s.sent_messages:,} messages sent ({demo.broker_kind} broker)\n"
        f"edges: {s.accepted:,} samples signed into logs; duplicates {s.duplicates}, "
        f"late {s.late}; rejected: {rejects}\n"
        f"gateway: {s.stored:,} samples stored, every block verified "
        f"({s.streams_ok}/{s.streams} streams ok)\n"
        f"data in {demo.data}; Ctrl-C stops")
    return Group(t, foot)


def print_summary(demo: Demo, s: Summary, out: Callable[[str], None]) -> None:
    rejects = ", ".join(f"{k} {n}" for k, n in s.rejected.most_common()) or "none"
    out("summary:")
    out(f"  simulator sent        {s.sent_messages:>8,} messages, {s.sent_samples:,} samples")
    out(f"  valid samples sent    {s.valid_samples:>8,}")
    out(f"  signed at the edges   {s.accepted:>8,}  (duplicates dropped {s.duplicates}, "
        f"late {s.late})")
    out(f"  rejected at the edges {sum(s.rejected.values()):>8,}  ({rejects})")
    out(f"  stored and verified   {s.stored:>8,}  at the gateway "
        f"({s.streams_ok}/{s.streams} streams ok)")
    for line in s.reconcile():
        out(f"  {line}")
    out(f"  data: {demo.data}")
