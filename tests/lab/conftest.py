"""The `lab` fixture: a fresh NAT lab for each test (building one takes a fraction of a
second); without root, `ip` or `nft` a test fails in CI and skips elsewhere."""

from __future__ import annotations

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
