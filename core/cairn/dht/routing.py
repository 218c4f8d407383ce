"""The Kademlia routing table: k nodes per row, rows by common-prefix length with our id."""

from __future__ import annotations

import random
from collections.abc import Iterator

from cairn.dht.messages import Address

__all__ = ["PER_HOST", "K", "NodeInfo", "RoutingTable", "capped_host"]

K = 20
PER_HOST = 2
"""At most this many nodes of one host in a closest set (the nodes a query stores at and reads
from, and the nodes a FIND_NODE reply names). Node ids are H(ip, port), so without a cap one
host can grind ports until it owns every id next to a key (issue 10, Sybil capture)."""


def capped_host(host: str) -> bool:
    """True when :data:`PER_HOST` applies to ``host``: every host but loopback, where a local
    testnet runs all its nodes on one address."""
    return not (host.startswith("127.") or host == "::1" or host == "localhost")


class NodeInfo:
    """A node we know: its id (checked against its address), and when we heard from it."""

    __slots__ = ("added", "addr", "down_hints", "id", "int_id", "pinged", "seen")

    def __init__(self, node_id: bytes, addr: Address, now: float,
                 int_id: int | None = None) -> None:
        self.id = node_id
        self.int_id = int.from_bytes(node_id, "big") if int_id is None else int_id
        self.addr = addr
        self.added = now
        self.pinged = now
        self.seen = now
        self.down_hints = 0

    def __repr__(self) -> str:
        return f"NodeInfo({self.id.hex()[:8]}, {self.addr[0]}:{self.addr[1]})"


class RoutingTable:
    def __init__(self, node_id: bytes, k: int = K) -> None:
        self.id = node_id
        self.int_id = int.from_bytes(node_id, "big")
        self.k = k
        self.rows: dict[int, list[NodeInfo]] = {}
        self._by_id: dict[bytes, NodeInfo] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[NodeInfo]:
        return iter(list(self._by_id.values()))

    def row_index(self, int_id: int) -> int:
        """The length of the prefix ``int_id`` shares with our id (255 for our own id)."""
        d = int_id ^ self.int_id
        return 255 if d == 0 else 256 - d.bit_length()

    def row_for(self, node_id: bytes) -> list[NodeInfo]:
        return self.rows.get(self.row_index(int.from_bytes(node_id, "big")), [])

    def get(self, node_id: bytes) -> NodeInfo | None:
        return self._by_id.get(node_id)

    def add(self, node: NodeInfo) -> bool:
        """Add a node; False when it is us, known already, or its row is full."""
        if node.id == self.id or node.id in self._by_id:
            return False
        row = self.rows.setdefault(self.row_index(node.int_id), [])
        if len(row) >= self.k:
            return False
        row.append(node)
        self._by_id[node.id] = node
        return True

    def remove(self, node_id: bytes) -> NodeInfo | None:
        node = self._by_id.pop(node_id, None)
        if node is None:
            return None
        i = self.row_index(node.int_id)
        row = self.rows[i]
        row.remove(node)
        if not row:
            del self.rows[i]
        return node

    def closest(self, target: bytes, k: int | None = None) -> list[NodeInfo]:
        """The k known nodes closest to ``target`` by XOR distance, closest first, with at
        most :data:`PER_HOST` of one host (:func:`capped_host`)."""
        t = int.from_bytes(target, "big")
        want = k or self.k
        out: list[NodeInfo] = []
        per_host: dict[str, int] = {}
        for n in sorted(self._by_id.values(), key=lambda n: n.int_id ^ t):
            host = n.addr[0]
            if capped_host(host):
                seen = per_host.get(host, 0)
                if seen >= PER_HOST:
                    continue
                per_host[host] = seen + 1
            out.append(n)
            if len(out) == want:
                break
        return out

    def random_node(self, rng: random.Random) -> NodeInfo | None:
        if not self._by_id:
            return None
        return rng.choice(list(self._by_id.values()))

    def oldest(self, n: int) -> list[NodeInfo]:
        """The n nodes we pinged longest ago."""
        return sorted(self._by_id.values(), key=lambda x: x.pinged)[:n]
