"""The NAT lab's fixtures (its `lab` marker comes by folder, from tests/conftest.py): the `lab`
fixture is a fresh NAT lab for each test (building one takes a fraction of a second); without
root, `ip` or `nft` a test fails in CI and skips elsewhere."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import missing
from tests.lab import Lab, lab_unavailable


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
