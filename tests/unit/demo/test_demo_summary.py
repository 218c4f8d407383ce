"""The demo's summary adds up, or its lines say why not (Summary.reconcile)."""

from __future__ import annotations

from collections import Counter

from cairn_demo.system import Summary


def test_a_run_that_adds_up_says_so() -> None:
    s = Summary(valid_samples=706, accepted=702, duplicates=4, sent_twice=4, stored=702)
    assert s.reconcile() == ["adds up: valid 706 - duplicates 4 = 702 signed"]


def test_readings_refused_alone_explain_a_shortfall() -> None:
    s = Summary(valid_samples=700, accepted=690, duplicates=4, sent_twice=4, stored=690,
                refused=Counter({"wrong-unit": 6}))
    lines = s.reconcile()
    assert lines[0] == ("does not add up: valid 700 - duplicates 4 = 696, signed 690 (-6), "
                        "because:")
    assert lines[1] == "  6 readings of valid messages refused alone at the edges (wrong-unit 6)"
    assert len(lines) == 2  # nothing left unexplained


def test_redeliveries_and_unacknowledged_messages_are_named() -> None:
    s = Summary(valid_samples=700, accepted=693, duplicates=6, sent_twice=4, stored=693,
                unacked=5)
    lines = s.reconcile()
    assert "2 of the duplicates were delivered again by the broker" in lines[1]
    assert lines[2].startswith("  5 valid samples were in messages the broker never ack")
    assert len(lines) == 3  # 700 - 4 sent twice = 696; 3 missing: within the 5 unacknowledged


def test_what_nothing_explains_is_said_too() -> None:
    s = Summary(valid_samples=700, accepted=650, duplicates=0, stored=640)
    lines = s.reconcile()
    assert lines[1].startswith("  50 samples missing that these do not explain")
    assert lines[2].startswith("10 signed samples were not collected by the gateway")
    more = Summary(valid_samples=10, accepted=12, stored=12).reconcile()
    assert more[1].startswith("  2 samples more than expected")
