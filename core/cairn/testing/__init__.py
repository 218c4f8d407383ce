"""Test doubles that ship with Cairn, for its own tests and for yours (as `trio.testing` does).

Cairn's protocol cores do no I/O: they take bytes, `now` and an `rng` as arguments. These doubles
give a test everything around a core without sockets, clocks or sleeps:

- `FakeClock`: time that moves only on `advance(dt)`, with timers that fire in order;
- `SeededRandom`: a reproducible `random.Random` with `randbytes` and `fork(label)`;
- `FakeNetwork`: datagrams between `(host, port)` addresses with seeded loss, delay, duplication
  and partitions, for datagram cores (the DHT);
- `memory_stream_pair`: two connected in-memory byte streams, for stream cores (Noise,
  secret-stream, Protomux, replication).
"""

from cairn.testing._clock import FakeClock, Timer
from cairn.testing._dht import DHTSwarm, SwarmNode
from cairn.testing._network import Address, Datagram, FakeNetwork, NetworkStats
from cairn.testing._random import SeededRandom
from cairn.testing._stream import MemoryStream, memory_stream_pair

__all__ = [
    "Address",
    "DHTSwarm",
    "Datagram",
    "FakeClock",
    "FakeNetwork",
    "MemoryStream",
    "NetworkStats",
    "SeededRandom",
    "SwarmNode",
    "Timer",
    "memory_stream_pair",
]
