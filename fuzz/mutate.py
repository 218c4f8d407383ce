"""The pure-Python engine: seeded random mutation of a seed corpus, no coverage feedback.

It drives the same :class:`~fuzz.harnesses.Harness` objects as atheris does; ``make test``
runs it (tests/reliability/test_fuzz_short.py), and ``fuzz/run.py --engine python`` runs it
where atheris cannot be installed. The same seed gives the same inputs.
"""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cairn.testing import SeededRandom
from fuzz.harnesses import Finding, Harness

__all__ = ["MAX_LEN", "Report", "fuzz", "mutate", "save_finding"]

MAX_LEN = 4096  # bytes: longest input made

# Bytes that mean something to the decoders: compact-encoding's uint prefixes, CBOR heads
# (indefinite lengths, tags, floats, break), JSON and TOML punctuation.
_INTERESTING = bytes([0x00, 0x01, 0x7F, 0x80, 0xFC, 0xFD, 0xFE, 0xFF, 0x1F, 0x5F, 0x9F, 0xBF,
                      0xC2, 0xC4, 0xF9, 0xFB, 0x3F, 0x5B, 0x5D, 0x7B, 0x7D, 0x22, 0x2C, 0x3D])
_TOKENS = (b"\xff" * 9, b"\xfe\xff\xff\xff\xff", b"\xfd\xff\xff", b"\x9f" * 8, b"\xbf",
           b"[" * 64, b'{"a":', b"1e999", b"-0", b"NaN", b"\x00" * 8, b"\n[x]\n", b'"\\ud800"',
           b"\xf0\x9f\x92\xa9", b"\xc0\x80", b"=", b"]]", b"[[", b"\xfb\x7f\xf0" + bytes(6))


def mutate(data: bytes, rng: SeededRandom, pool: Sequence[bytes]) -> bytes:
    """One to four random edits of ``data`` (bit flips, bytes set, inserted, deleted,
    duplicated, tokens, splices with another input of ``pool``), at most :data:`MAX_LEN`."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        n = len(buf)
        pos = rng.randrange(n + 1)
        if op == 0 and n:
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[rng.randrange(n)] = rng.choice(_INTERESTING)
        elif op == 2 and n:
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 3:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and n:
            del buf[pos:pos + rng.randint(1, max(1, min(16, n // 4 + 1)))]
        elif op == 5 and n:
            start = rng.randrange(n)
            piece = buf[start:start + rng.randint(1, 64)]
            buf[pos:pos] = piece * rng.randint(1, 4)
        elif op == 6:
            buf[pos:pos] = rng.choice(_TOKENS)
        elif op == 7 and pool:
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + bytearray(other[cut:])
        elif n:
            del buf[rng.randrange(n):]  # truncate
    return bytes(buf[:MAX_LEN])


@dataclass(slots=True)
class Report:
    name: str
    runs: int = 0
    findings: int = 0  # inputs that turned up a finding
    unique: dict[str, bytes] = field(default_factory=dict)  # first input per distinct finding
    slowest: float = 0.0  # seconds

    def line(self) -> str:
        return (f"{self.name:<20} runs {self.runs:>10,}  findings {self.findings:>3} "
                f"({len(self.unique)} distinct)  slowest {self.slowest * 1000:7.2f} ms")


def signature(finding: Finding) -> str:
    """What makes two findings the same: the exception type and where it was raised."""
    cause = finding.__cause__ or finding
    tb = traceback.extract_tb(cause.__traceback__)
    where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
    return f"{type(finding).__name__}/{type(cause).__name__}@{where}"


def save_finding(directory: Path, name: str, data: bytes, finding: Finding) -> Path:
    """Write the input (``.bin``) and what it did (``.txt``) under ``directory/name``."""
    out = directory / name
    out.mkdir(parents=True, exist_ok=True)
    stem = hashlib.sha1(data, usedforsecurity=False).hexdigest()[:16]
    (out / f"{stem}.bin").write_bytes(data)
    cause = finding.__cause__ or finding
    text = "".join(traceback.format_exception(cause))
    (out / f"{stem}.txt").write_text(f"{finding}\ninput (hex): {data.hex()}\n\n{text}")
    return out / f"{stem}.bin"


def record(report: Report, data: bytes, elapsed: float | None, finding: Finding | None,
           on_new: Callable[[bytes, Finding], None] | None = None) -> None:
    """Count one run in ``report``."""
    report.runs += 1
    if elapsed is not None:
        report.slowest = max(report.slowest, elapsed)
    if finding is not None:
        report.findings += 1
        key = signature(finding)
        if key not in report.unique:
            report.unique[key] = data
            if on_new is not None:
                on_new(data, finding)


def fuzz(harness: Harness, seeds: Sequence[bytes], runs: int, seed: int | str = 0,
         on_new: Callable[[bytes, Finding], None] | None = None) -> Report:
    """Run ``harness`` on ``seeds`` and then on mutations of them, ``runs`` inputs in all."""
    rng = SeededRandom(f"cairn-fuzz/{seed}/{harness.name}")
    report = Report(harness.name)
    pool = list(seeds) or [b""]
    recent: list[bytes] = []  # mutations are mutated again, so edits pile up
    for k in range(runs):
        if k < len(seeds):
            data = seeds[k]
        else:
            parent = rng.choice(recent) if recent and rng.random() < 0.3 else rng.choice(pool)
            data = mutate(parent, rng, pool)
            recent.append(data)
            if len(recent) > 64:
                recent.pop(rng.randrange(len(recent)))
        try:
            record(report, data, harness.check(data), None, on_new)
        except Finding as exc:
            record(report, data, None, exc, on_new)
    return report
