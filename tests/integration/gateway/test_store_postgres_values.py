"""The API tests of values in their kind, on PostgreSQL (see test_store_postgres.py)."""

from __future__ import annotations

from tests.integration.gateway.pgstores import store_target  # noqa: F401
from tests.unit.gateway.test_gateway_values import (  # noqa: F401 - tests and their fixture
    client,
    test_strings_are_shown_safely,
    test_the_api_serves_each_value_in_its_kind,
)
