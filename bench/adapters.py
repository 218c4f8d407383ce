"""The payload adapters on the corpus of real devices' messages (tests/corpus): how many of the
readings each family's documentation says a message carries are read right (stream, unit,
value, time), by the adapters of this tree and by those of ``main`` (git show, when the tree
has it: issue 20's "about six in ten"), and messages decoded per second.

No JS anchor: the decoders have none (the firmware's own parsers are C++ on the devices).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_table import Row, print_tables

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.edge.test_adapters_corpus import (  # noqa: E402
    FILES,
    RECEIVED,
    expected_time,
    load,
    payload_bytes,
    route_of,
)

from cairn_edge.adapters import DEFAULT_ROUTES, Decoder  # noqa: E402

Decode = Callable[[str, bytes], list[Any] | None]


def _main_decoder() -> Callable[[dict[str, Any]], Decode] | None:
    """The decode function of ``main``'s adapters.py (the one module before issue 20)."""
    try:
        text = subprocess.run(["git", "show", "main:edge/cairn_edge/adapters.py"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    path = Path(tempfile.mkdtemp(prefix="cairn-bench-")) / "old_adapters.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_adapters", path)
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_adapters"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)

    def make(doc: dict[str, Any]) -> Decode:
        def decode(topic: str, payload: bytes) -> list[Any] | None:
            try:
                got: list[Any] | None = mod.decode(mod.DEFAULT_ROUTES, topic, payload, None,
                                                   RECEIVED)
                return got
            except mod.Rejected:
                return None
        return decode
    return make


def _this(doc: dict[str, Any]) -> Decode:
    decoder = Decoder([*route_of(doc), *DEFAULT_ROUTES])

    def decode(topic: str, payload: bytes) -> list[Any] | None:
        try:
            got = decoder.decode(topic, payload, None, RECEIVED)
        except Exception:
            return None
        return None if got is None else list(got)
    return decode


def right(doc: dict[str, Any], make: Callable[[dict[str, Any]], Decode]) -> tuple[int, int]:
    """(readings read right, readings the documentation lists) for one corpus file."""
    decode = make(doc)
    got = []
    for m in doc["messages"]:
        got.extend(decode(m["topic"], payload_bytes(m["payload"])) or [])
    want = [(d, q, u, expected_time(t), v) for d, q, u, t, v in doc["readings"]]
    pool = [(r.device, r.quantity, r.unit, r.time, r.value) for r in got]
    ok = 0
    for w in want:
        for k, g in enumerate(pool):
            same_time = (g[3] is None and w[3] is None) or (
                g[3] is not None and w[3] is not None and abs(g[3] - w[3]) < 1e-3)
            same_value = (type(g[4]) is type(w[4]) and g[4] == w[4]) or (
                isinstance(w[4], float) and isinstance(g[4], float)
                and abs(g[4] - w[4]) <= 1e-6 * max(1.0, abs(w[4])))
            if g[:3] == w[:3] and same_time and same_value:
                ok += 1
                pool.pop(k)
                break
    return ok, len(want)


def throughput(docs: list[dict[str, Any]], seconds: float) -> float:
    msgs = [(d, m["topic"], payload_bytes(m["payload"])) for d in docs for m in d["messages"]]
    decoders = {id(d): _this(d) for d in docs}
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for d, topic, payload in msgs:
            decoders[id(d)](topic, payload)
        n += len(msgs)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="per throughput figure")
    ap.add_argument("--markdown", action="store_true", help="the table again in Markdown")
    args = ap.parse_args(argv)
    old = _main_decoder()
    families: dict[str, list[dict[str, Any]]] = {}
    for p in FILES:
        families.setdefault(p.parent.name, []).append(load(p))
    rows = []
    total = [0, 0, 0]
    for family, docs in sorted(families.items()):
        ok = sum(right(d, _this)[0] for d in docs)
        listed = sum(right(d, _this)[1] for d in docs)
        before = sum(right(d, old)[0] for d in docs) if old else None
        total[0] += ok
        total[1] += listed
        total[2] += before or 0
        rows.append(Row(f"{family}: readings read right, of {listed}", "%",
                        100.0 * ok / listed, None, None,
                        f"main: {100.0 * before / listed:.0f} %" if before is not None else "-",
                        "all" if ok == listed else "MISSES"))
        rows.append(Row(f"{family}: messages decoded", "msg/s",
                        throughput(docs, args.seconds), None, None, "-", "-"))
    rows.append(Row(f"corpus: readings read right, of {total[1]}", "%",
                    100.0 * total[0] / total[1], None, None,
                    f"main: {100.0 * total[2] / total[1]:.0f} %" if old else "-",
                    "all" if total[0] == total[1] else "MISSES"))
    print_tables(rows, args.markdown)
    print(json.dumps({"right": total[0], "listed": total[1], "main": total[2] if old else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
