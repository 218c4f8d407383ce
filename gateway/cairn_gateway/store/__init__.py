"""The gateway's sample store: one interface (:class:`Store`), two engines: SQLite, embedded, the
default (:mod:`.sqlite`), and PostgreSQL, for a fleet past one machine and several gateways
(:mod:`.postgres`). ``Store(target)`` opens the one its target names (a path, or a
``postgresql://`` URL). Both keep the same tables:

- ``devices``: one row per device (its DHT record key; its name, and when it was enrolled and
  removed: the fleet roster, :mod:`cairn_gateway.roster`), ``pending``: devices seen on the
  fleet topic but not enrolled, ``streams``: one per stream log (its key,
  name, unit, how far it is stored, whether a fork stopped it);
- ``samples``: keyed by (stream, time, block, position in the block), with provenance (block
  index and fork of the log block it came from; the log key is the stream's). Exactly once: a
  block already ingested is skipped, whoever imports it, and a sample (its block and position)
  is never stored twice; two samples at the same time (Tasmota stamps whole seconds) are both
  kept;
- ``rollup_minute`` / ``rollup_hour``: count, sum, min, max per bucket, kept up to date at
  ingest from the samples actually inserted (set-based, in the same transaction); values beyond
  ``ROLLUP_BOUND`` are stored but not rolled up (counted in ``rollup_skipped``), so rollups
  stay finite whatever values arrive;
- retention by age (:meth:`Store.prune`);
- ``reach``: why each device is or is not collected, as the daemon last noted it;
- kinds of value (m007): each sample keeps its kind (``kind``: 0 number, 1 boolean, 2 string,
  3 data; :data:`KINDS`): a number or a boolean in ``value`` (a boolean as 1.0 or 0.0), a string
  in ``text``, data (SenML ``vd``) as hex in ``text``. A stream's kind (``streams.kind``) is the
  kind of the first sample stored; samples of another kind (an edge that switched, a hostile
  writer) are stored all the same, never rolled up, and counted in ``streams.other_kind``.
  Rollups are kept for number streams (count, sum, min, max) and boolean streams (count, number
  of true in ``total``, so the mean is the share of true); string and data streams have none:
  their buckets (count, last value) are read from the samples (:func:`cairn_gateway.queries.
  states`), so they reach back as far as the samples' retention.
"""

from cairn_gateway.store.base import Conn, Store, bucket_sql, check_url, is_url, now_sql
from cairn_gateway.store.common import (
    BOOLEAN,
    DATA,
    KINDS,
    MISSING_REASONS,
    NUMBER,
    ROLLED_UP,
    ROLLUP_BOUND,
    STRING,
    IngestItem,
    RollupRow,
    Series,
    StoreError,
    describe_missing,
    kind_code,
    typed_value,
)
from cairn_gateway.store.sqlite import MIGRATIONS, SQLiteStore

__all__ = ["BOOLEAN", "DATA", "KINDS", "MIGRATIONS", "MISSING_REASONS", "NUMBER", "ROLLED_UP",
           "ROLLUP_BOUND", "STRING", "Conn", "IngestItem", "RollupRow", "SQLiteStore", "Series",
           "Store", "StoreError", "bucket_sql", "check_url", "describe_missing", "is_url",
           "kind_code", "now_sql", "typed_value"]
