"""The NAT lab's marker and fixtures: every test under tests/lab is marked `lab` (here, not in
the test files); the `lab` fixture is a fresh NAT lab for each test (building one takes a
fraction of a second); without root, `ip` or `nft` a test fails in CI and skips elsewhere."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.lab import Lab, lab_unavailable

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `lab` marker on every test under tests/lab (the hook sees the whole session's
    items: only ours are marked)."""
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker("lab")


@pytest.fixture
def lab() -> Iterator[Lab]:
    why = lab_unavailable()
    if why is not None:
        missing(f"the NAT lab: {why}", "run `make test` as root (it installs iproute2 and "
                "nftables with apt-get)")
    with Lab() as built:
        yield built


@pytest.fixture
def conntrack_path() -> str:
    """The `conntrack` tool (Debian's conntrack), for `Lab.forget_mappings`."""
    found = shutil.which("conntrack")
    if found is None:
        missing("conntrack", "run `make test` as root (it installs it with apt-get), or "
                "`apt-get install conntrack`")
    return found
