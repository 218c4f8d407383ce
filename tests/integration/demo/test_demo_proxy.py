"""The demo's network-path proxy closes every socket it opened, however it is stopped: the
chaos test's teardown found one left open after 30 minutes of cuts (make soak)."""

from __future__ import annotations

import socket
from pathlib import Path

from cairn_demo import Demo, Proxy


def _closed(sock: socket.socket) -> bool:
    """Whether the peer of ``sock`` closed (EOF or reset), waiting at most 10 s."""
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_proxy_still_relaying_when_the_demo_stops_closes_both_ends(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "demo", api_port=0)
    upstream = socket.create_server(("127.0.0.1", 0))
    with upstream, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        demo._loop_thread.start()
        # not in demo.proxies: nothing cuts it, its relay is still running when the loop stops
        proxy = Proxy(demo.loop, port, upstream.getsockname())
        proxy.restore()
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        upstream.settimeout(10)
        relayed, _ = upstream.accept()  # the proxy's upstream end: both pipes are running
        with client, relayed:
            client.sendall(b"ping")
            assert relayed.recv(4) == b"ping"

            async def stop_listening() -> None:  # (what a cut closes besides the relays)
                assert proxy.server is not None
                proxy.server.close()

            proxy._call(stop_listening())
            demo.stop()
            assert demo.loop.is_closed()
            assert _closed(client), "the proxy's accepted socket was left open"
            assert _closed(relayed), "the proxy's upstream socket was left open"
            assert not proxy.conns
