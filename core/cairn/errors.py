"""Cairn's exceptions, one tree, split by whose fault it is (the h11 / httpx habit).

::

    CairnError
     ├── LocalError              we misused the API: a bug in the caller, raise it
     │    ├── ReadOnlyError      a write on a log opened from a key alone
     │    ├── NotAvailableError  asked for a block or node this log does not hold
     │    │    └── merkle.InvalidRequestError
     │    └── dht.aio.NodeClosedError
     ├── RemoteError             bytes from outside were wrong: drop or ban the source, never crash
     │    ├── DecodeError        malformed encoding (truncated, out of range, trailing bytes)
     │    │    ├── fleet: EnrollmentError, RecordError, WatermarkError
     │    │    └── cairn_edge.adapters.Rejected (a board's payload)
     │    ├── VerificationError  a proof or signature does not check out
     │    ├── ForkError          two valid signatures disagree: the writer forked; the replica
     │    │                      is frozen and the evidence kept
     │    ├── replication: HandshakeError, SecretStreamError (FrameTooLargeError),
     │    │    MuxError (ChannelLimitError), CapabilityError, PeerError, PeerRefusedError
     │    ├── dht.api.NotStoredError (SeqTooLowError, SeqReusedError): a node's refusal
     │    └── cairn_gateway.auth._BodyError (a client's request body)
     ├── StorageError            a file on disk is damaged or not ours (truncated, flipped bytes)
     │    ├── DamagedBlockError  one held block's data no longer matches its leaf hash (a bad
     │    │                      sector): that block cannot be served, the rest of the log can
     │    ├── cairn_edge.streams.StreamsError
     │    └── cairn_gateway.store.StoreError
     ├── UsageError              what the operator gave (a config file, a CLI argument, a key,
     │    │                      seed or token file, a name) is wrong: say which, exit 2
     │    └── settings.ConfigError, brokers.BrokerURLError, fleet.identity.SeedError,
     │         cairn_gateway: TokenError, RosterError, ProvisionError, store.migrate:
     │         SourceStoreError, TargetInUseError; cairn_sim.scenario.ScenarioError,
     │         cairn_demo.processes.DemoDataError
     └── ServiceError            something Cairn needs from the host (a broker, a port, the DHT, a
          │                      child process) is missing or failed: not a bug, not hostile
          │                      input; fix the host or retry
          └── brokers: MosquittoError, EmbeddedBrokerError; dht.api.UnreachableError;
               datalock.DataDirectoryBusyError; cairn_demo.processes.DemoError;
               cairn_gateway.pgcluster.PostgresClusterError; cairn_gateway.leases.LeaseLost

The command lines end each of these in one line and an exit code (``cairn.entry``): 2 for a
``UsageError``, 1 for the rest.

``dht.api.DHTError`` is a second base shared by the DHT client's errors (UnreachableError and
NotStoredError), so ``except DHTError`` catches both. Classes keep a builtin second base
(``ValueError``, ``RuntimeError``) where callers catch that. ``tests/unit/test_errors.py``
walks every package and fails on an exception class outside this tree.

A decoder fed arbitrary bytes raises only :class:`DecodeError` (a :class:`RemoteError`).
Wire error codes are ``IntEnum`` values of their protocol modules, apart from these exceptions.
"""

from __future__ import annotations

__all__ = [
    "CairnError",
    "DamagedBlockError",
    "DecodeError",
    "ForkError",
    "LocalError",
    "NotAvailableError",
    "ReadOnlyError",
    "RemoteError",
    "ServiceError",
    "StorageError",
    "UsageError",
    "VerificationError",
]


class CairnError(Exception):
    """Base of every exception Cairn raises on purpose."""


class LocalError(CairnError):
    """The caller misused the API."""


class ReadOnlyError(LocalError):
    """A write was attempted on a log that has no secret key."""


class NotAvailableError(LocalError):
    """A block or tree node was asked for that this log does not hold."""


class RemoteError(CairnError):
    """Data from outside (a peer, a file, a payload) was invalid."""


class DecodeError(RemoteError):
    """Bytes could not be decoded: truncated, out of range or with trailing garbage."""


class VerificationError(RemoteError):
    """A proof, hash or signature did not verify."""


class ForkError(RemoteError):
    """The writer signed two different trees for history that was already signed.

    The replica keeps both signed states as evidence and refuses further updates.
    """


class StorageError(CairnError):
    """A file on disk is damaged, truncated or not a Cairn file."""


class DamagedBlockError(StorageError):
    """One held block's data no longer matches its stored leaf hash (a bad sector, a flipped
    byte): it cannot be served or read; the other blocks and the tree still can."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


class UsageError(CairnError):
    """What the operator gave (config, CLI argument, key/seed/token file, name) is wrong.

    The message names the file, key or argument and what was wrong with it; commands print it
    as one line and exit with status 2.
    """


class ServiceError(CairnError):
    """Something Cairn needs from the host (a broker, a port, the DHT, a child process) is
    missing or failed."""
