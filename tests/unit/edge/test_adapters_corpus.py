"""Every payload of the corpus of real devices' messages (tests/corpus) decodes to the readings
written by hand from the firmware's documentation, and refuses what it says, by reason."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cairn_edge.adapters import DEFAULT_ROUTES, Decoded, Decoder, Field, Reading, Route

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
RECEIVED = 1_764_000_000.0
FILES = sorted(CORPUS.glob("*/*.json"))


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def route_of(doc: dict[str, Any]) -> list[Route]:
    r = doc.get("route")
    if r is None:
        return []
    fields = tuple(Field(f["path"], f["quantity"], f.get("unit"), f.get("type"))
                   for f in r.get("fields", []))
    return [Route(r["filter"], r["format"], fields=fields)]


def payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def expected_time(t: Any) -> float | None:
    if t is None:
        return None
    if isinstance(t, int | float):
        return float(t)
    if isinstance(t, dict):
        return RECEIVED + float(t["received"])
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def run(doc: dict[str, Any]) -> tuple[list[Reading], Counter[str]]:
    decoder = Decoder([*route_of(doc), *DEFAULT_ROUTES])
    readings: list[Reading] = []
    refused: Counter[str] = Counter()
    for m in doc["messages"]:
        got = decoder.decode(m["topic"], payload_bytes(m["payload"]), None, RECEIVED)
        if got is not None:
            assert isinstance(got, Decoded)
            readings.extend(got)
            refused.update(got.reasons())
    return readings, refused


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.stem}" for p in FILES])
def test_a_real_payload_decodes_to_the_documented_readings(path: Path) -> None:
    doc = load(path)
    assert doc["source"], "every corpus file names where it came from"
    readings, refused = run(doc)
    want = [(d, q, u, expected_time(t), v) for d, q, u, t, v in doc["readings"]]
    got = [(r.device, r.quantity, r.unit, r.time, r.value) for r in readings]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g[3] == pytest.approx(w[3], abs=1e-6), g  # times
        assert type(g[4]) is type(w[4]), g  # a boolean stays a boolean, text stays text
        assert g[4] == (pytest.approx(w[4], rel=1e-9) if isinstance(w[4], float) else w[4]), g
    assert refused == Counter(doc.get("refused", {}))


def test_the_corpus_covers_every_family() -> None:
    assert {p.parent.name for p in FILES} >= {"senml", "tasmota", "esphome", "homie",
                                              "zigbee2mqtt", "shelly", "json"}
    assert all(load(p)["readings"] for p in FILES)
