"""The DHT: a dht-rpc 6 node speaking hyperdht 6 records (sans-I/O core + asyncio adapter)."""

from cairn.dht.aio import NodeClosedError, UDPNode
from cairn.dht.api import (
    DHT,
    DHTError,
    NotStoredError,
    PeerLookup,
    PutReceipt,
    SeqReusedError,
    SeqTooLowError,
    UnreachableError,
)
from cairn.dht.events import Bootstrapped, Event, QueryDone, QueryReply, Reply, RequestDone
from cairn.dht.messages import Address, node_id
from cairn.dht.node import CLIENT, SERVER, Answer, DHTNode, IncomingRequest
from cairn.dht.records import MAX_VALUE_SIZE, MutableRecord, Peer

__all__ = [
    "CLIENT",
    "DHT",
    "MAX_VALUE_SIZE",
    "SERVER",
    "Address",
    "Answer",
    "Bootstrapped",
    "DHTError",
    "DHTNode",
    "Event",
    "IncomingRequest",
    "MutableRecord",
    "NodeClosedError",
    "NotStoredError",
    "Peer",
    "PeerLookup",
    "PutReceipt",
    "QueryDone",
    "QueryReply",
    "Reply",
    "RequestDone",
    "SeqReusedError",
    "SeqTooLowError",
    "UDPNode",
    "UnreachableError",
    "node_id",
]
