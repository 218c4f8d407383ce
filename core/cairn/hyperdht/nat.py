"""What a NAT does to one socket, from the ``to`` field of the replies it gets (hyperdht
lib/nat.js, nat.md section 3). Sans-I/O: the driver pings a few DHT nodes from the socket and
calls :meth:`NatSampler.add` with each reply's ``to`` (our address as that node saw it) and
``from``.

- at least 3 samples are needed for any verdict (before: UNKNOWN);
- one host:port seen 3 times or more: CONSISTENT (an endpoint-independent mapping);
- every sample different: RANDOM (a new port per destination: a symmetric NAT);
- otherwise (the best seen twice): one host and more than 3 samples -> RANDOM; two host:ports
  seen twice each -> CONSISTENT; more than 4 samples -> RANDOM; else still UNKNOWN.

Reported addresses: CONSISTENT -> every host:port seen twice or more (at least the best two),
RANDOM -> the host alone (port 0), UNKNOWN -> none. A node is OPEN only when told so
(``open=True``: a public address configured, or dht-rpc's reachability check passed); samples
never make a node OPEN.

One sample per replying node (a node answering twice counts once) and at most
:data:`MAX_SAMPLES` in all: a hostile node can spoil the verdict (that is what the other
samples outvote) but not grow the state.
"""

from __future__ import annotations

from dataclasses import dataclass

from cairn.dht.messages import Address
from cairn.hyperdht.messages import Firewall

__all__ = ["MAX_SAMPLES", "MIN_SAMPLES", "NatSampler"]

MIN_SAMPLES = 4
"""Nodes the driver pings from a fresh socket (hyperdht: 4)."""

MAX_SAMPLES = 16


@dataclass(slots=True)
class _Hits:
    host: str
    port: int
    hits: int


def _add(samples: list[_Hits], host: str, port: int) -> None:
    for i, s in enumerate(samples):
        if s.host == host and s.port == port:
            s.hits += 1
            while i > 0 and samples[i - 1].hits < s.hits:  # keep them sorted by hits
                samples[i - 1], samples[i] = samples[i], samples[i - 1]
                i -= 1
            return
    samples.append(_Hits(host, port, 1))


class NatSampler:
    """The NAT class of one socket, from the addresses replying nodes saw it at."""

    def __init__(self, *, open: bool = False) -> None:
        self.open = open
        self.sampled = 0
        self.frozen = False
        self._firewall = Firewall.OPEN if open else Firewall.UNKNOWN
        self._addresses: tuple[Address, ...] = ()
        self._hosts: list[_Hits] = []
        self._full: list[_Hits] = []
        self._from: set[Address] = set()

    @property
    def firewall(self) -> Firewall:
        return self._firewall

    @property
    def addresses(self) -> tuple[Address, ...]:
        """Where peers may reach this socket (see the module docstring); empty when UNKNOWN."""
        return self._addresses

    def add(self, to: Address, referrer: Address) -> bool:
        """One reply from ``referrer`` saying it saw us at ``to``; False when not counted (that
        node answered before, or the sampler is full)."""
        if referrer in self._from or self.sampled >= MAX_SAMPLES:
            return False
        self._from.add(referrer)
        _add(self._hosts, to[0], 0)
        _add(self._full, to[0], to[1])
        self.sampled += 1
        if not self.frozen:
            self._update()
        return True

    def freeze(self) -> None:
        """Keep the verdict told to the peer (hyperdht freezes it before the punching round)."""
        self.frozen = True

    def _update(self) -> None:
        if self.open:
            self._firewall = Firewall.OPEN
        elif self.sampled >= 3:
            self._firewall = self._classify()
        if self._firewall == Firewall.RANDOM:
            self._addresses = ((self._hosts[0].host, 0),)
        elif self._firewall in (Firewall.CONSISTENT, Firewall.OPEN) and self._full:
            out: list[Address] = []
            for s in self._full:
                if s.hits >= 2 or len(out) < 2:
                    out.append((s.host, s.port))
            self._addresses = tuple(out)
        else:
            self._addresses = ()

    def _classify(self) -> Firewall:
        best = self._full[0].hits
        if best >= 3:
            return Firewall.CONSISTENT
        if best == 1:
            return Firewall.RANDOM
        if len(self._hosts) == 1 and self.sampled > 3:
            return Firewall.RANDOM
        if len(self._hosts) > 1 and len(self._full) > 1 and self._full[1].hits > 1:
            return Firewall.CONSISTENT
        if self.sampled > 4:
            return Firewall.RANDOM
        return self._firewall
