"""The store tests again, on PostgreSQL: the same test functions as on SQLite (imported from
the unit tests), each store a database of a real server (``tests/pg.py``). Left out: the tests
of SQLite's own migrations of older files and of SQLite triggers, and the hypothesis run (one
database per example would take minutes; its single examples are the tests here). The API
tests of values in their kind are in test_store_postgres_values.py (their fixture's name is
the API tests')."""

from __future__ import annotations

from tests.integration.gateway.pgstores import store_target  # noqa: F401
from tests.unit.gateway.test_gateway_api import (  # noqa: F401 - tests and their fixtures
    client,
    test_a_removed_devices_data_is_kept_and_flagged,
    test_bad_parameters_say_what_is_wrong,
    test_devices_streams_and_latest,
    test_metrics_for_prometheus,
    test_pending_devices_are_listed_apart_and_nothing_serves_a_log_key,
    test_samples_and_rollups_in_infinity_shape,
)
from tests.unit.gateway.test_gateway_missing import (  # noqa: F401
    test_holes_are_replaced_by_each_answer_and_keep_when_first_seen,
)
from tests.unit.gateway.test_gateway_store import (  # noqa: F401
    store,
    test_bad_step,
    test_blocks_are_stored_exactly_once,
    test_retention,
    test_rollups_count_each_sample_once_whatever_the_order,
    test_streams_and_devices,
    test_text_and_boolean_values,
    test_two_samples_at_the_same_time_are_both_kept,
)
from tests.unit.gateway.test_gateway_values import (  # noqa: F401
    test_a_stream_that_switches_kind_loses_nothing_and_rolls_up_its_own,
    test_booleans_roll_up_as_the_share_of_true,
    test_strings_are_stored_and_not_rolled_up,
    test_the_latest_of_two_values_at_one_time_is_one_row,
)
from tests.unit.gateway.test_live_ingest import (  # noqa: F401
    stores,
    test_a_stopped_stream_in_a_batch_stores_nothing_and_the_others_go_on,
    test_a_store_failure_under_live_batches_loses_nothing_and_stores_nothing_twice,
    test_ingest_many_stores_what_ingest_stores,
)
from tests.unit.gateway.test_rollup_finite import (  # noqa: F401
    test_huge_values_are_stored_but_not_rolled_up,
    test_many_values_at_the_bound_do_not_overflow_a_bucket,
)
from tests.unit.gateway.test_roster import (  # noqa: F401
    test_a_flood_of_keys_keeps_the_pending_list_bounded,
    test_a_name_is_bound_to_one_key_and_a_key_to_one_name,
    test_a_record_claiming_another_devices_streams_is_refused,
    test_discover_collects_enrolled_devices_only_and_notes_the_rest,
    test_enrol_list_and_remove,
    test_key_rotation_rebinds_the_name_and_keeps_the_old_data_flagged,
    test_unenrolled_keys_are_pending_with_what_their_record_says,
)
