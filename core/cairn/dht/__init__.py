"""The DHT: a dht-rpc 6 node speaking hyperdht 6 records (sans-I/O core + asyncio adapter)."""

from cairn.dht.events import Bootstrapped, Event, QueryDone, QueryReply, Reply, RequestDone
from cairn.dht.messages import Address, node_id
from cairn.dht.node import CLIENT, SERVER, Answer, DHTNode, IncomingRequest
from cairn.dht.records import MAX_VALUE_SIZE, MutableRecord, Peer

__all__ = [
    "CLIENT",
    "MAX_VALUE_SIZE",
    "SERVER",
    "Address",
    "Answer",
    "Bootstrapped",
    "DHTNode",
    "Event",
    "IncomingRequest",
    "MutableRecord",
    "Peer",
    "QueryDone",
    "QueryReply",
    "Reply",
    "RequestDone",
    "node_id",
]
