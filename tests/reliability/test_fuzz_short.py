"""The short version of ``make fuzz``: every wire decoder's harness on its seed corpus and on
seeded random mutations of it (the pure-Python engine, no atheris), with no finding: no
exception the decoder does not document, no input over 100 ms.
"""

from __future__ import annotations

import cbor2
import pytest
from fuzz.corpus import seeds
from fuzz.harnesses import HARNESSES, Finding
from fuzz.mutate import fuzz

from tests.scorecard import record, scale

RUNS = scale(5_000, 100_000)


def test_every_harness_has_seeds() -> None:
    for name, harness in HARNESSES.items():
        corpus = seeds(name)
        assert corpus, f"{name} has no seed inputs"
        for data in corpus:  # seeds are valid messages: they must not be findings either
            try:
                harness.check(data)
            except Finding as exc:
                pytest.fail(f"{name}: seed {data.hex()} is a finding: {exc}")


@pytest.mark.parametrize("name", list(HARNESSES))
def test_mutated_inputs(name: str) -> None:
    report = fuzz(HARNESSES[name], seeds(name), RUNS, seed=0)
    detail = "; ".join(f"{key}: {data.hex()[:120]}" for key, data in report.unique.items())
    line = record("fuzzing", f"{name}: seeded mutations, {report.slowest * 1000:.1f} ms max",
                  report.runs, report.findings, "crashes or hangs", detail=detail)
    assert report.runs == RUNS
    assert line.passed, f"{name}: {report.findings} findings: {detail}"


def test_device_record_bignum_is_a_record_error() -> None:
    """Found by fuzzing: a CBOR bignum time or value raised OverflowError, not RecordError."""
    for doc in ({0: 1, 1: 5, 3: ["a"], 5: [[0, 2**2000, 1]]},  # a bignum time offset
                {0: 1, 1: 5, 3: ["a"], 5: [[0, 1, 2**2000]]},  # a bignum value
                {0: 1, 1: 2**2000, 3: ["a"]}):  # a bignum time
        HARNESSES["device-record"].check(cbor2.dumps(doc))
