"""What a DHT node core tells its user: frozen, slotted events to ``match`` on."""

from __future__ import annotations

from dataclasses import dataclass

from cairn.dht.messages import Address

__all__ = ["Bootstrapped", "Event", "QueryDone", "QueryReply", "Reply", "RequestDone"]


@dataclass(frozen=True, slots=True)
class Reply:
    """A response to one of our requests, as a query sees it."""

    from_addr: Address
    from_id: bytes | None  # only when the id matches the address it came from
    token: bytes | None
    closer_nodes: tuple[Address, ...]
    error: int
    value: bytes | None
    to: Address  # our address as the responder saw it


@dataclass(frozen=True, slots=True)
class QueryReply:
    query: int
    reply: Reply


@dataclass(frozen=True, slots=True)
class QueryDone:
    """A query finished: its closest replies (closest first) and how many commits succeeded."""

    query: int
    closest: tuple[Reply, ...]
    commits: int
    error: str | None = None
    commit_errors: tuple[int, ...] = ()  # error codes the commit requests were answered with


@dataclass(frozen=True, slots=True)
class RequestDone:
    handle: int
    reply: Reply | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Bootstrapped:
    """The first bootstrap query finished; ``persistent`` says what the node became."""

    persistent: bool
    address: Address | None
    id: bytes


Event = QueryReply | QueryDone | RequestDone | Bootstrapped
