"""The lease tests again, on PostgreSQL: the same test functions as on SQLite (imported from
the unit tests), the three gateways' connections to one database of a real server
(``tests/pg.py``)."""

from __future__ import annotations

from tests.integration.gateway.pgstores import store_target  # noqa: F401
from tests.unit.gateway.test_leases import (  # noqa: F401 - tests and their fixtures
    stores,
    test_a_dead_gateways_share_goes_to_the_others,
    test_a_lease_is_trusted_only_until_its_renewal_is_too_old,
    test_a_removed_device_is_let_go,
    test_expiry_is_by_the_database_clock_and_another_takes_over,
    test_lease_seconds_are_bounded,
    test_one_gateway_claims_every_device_and_renews,
    test_release_and_a_clean_stop_give_devices_back_at_once,
    test_three_gateways_split_forty_devices_and_do_not_flap,
    test_two_claimers_racing_for_one_device_exactly_one_wins,
)
