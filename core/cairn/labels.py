"""Prometheus label values from what devices name: bounded, so a misbehaving board cannot
flood a scraper with long series (the edge's and the gateway's metrics both use it)."""

from __future__ import annotations

import hashlib

__all__ = ["MAX_LABEL", "cut_label"]

MAX_LABEL = 200  # characters of a label value


def cut_label(text: str) -> str:
    """A label value at most :data:`MAX_LABEL` characters: a longer one is cut and ends in a
    hash of the whole (two long names that start alike stay two series)."""
    if len(text) <= MAX_LABEL:
        return text
    digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    return text[:MAX_LABEL - 9] + "\u2026" + digest
