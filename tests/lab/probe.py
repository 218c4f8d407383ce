"""Probes run inside the lab's namespaces: `python -m tests.lab.probe serve|send ...`.

``serve --host H --ports N --seconds S``: binds N TCP and N UDP sockets on H (port 0), prints
``{"ports": [...]}`` (each port is both a TCP and a UDP port), then answers every TCP
connection and every UDP datagram with the address it came from, as seen here
(``"ip:port"``), and prints each as a JSON line, for S seconds at most.

``send udp|tcp --to H:P [--to H:P ...] [--sport P] [--timeout T]``: from one socket (UDP: one
socket bound to --sport for every destination; TCP: one connection each), sends ``hello`` to
each destination and prints ``{"seen": [...]}``: the address each answered we came from, or
null when nothing came back within T seconds (dropped, refused, unreachable).
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time


def _print(value: object) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def serve(host: str, count: int, seconds: float) -> None:
    sel = selectors.DefaultSelector()
    ports = []
    socks = []
    for _ in range(count):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((host, 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((host, port))
        t.listen(16)
        t.setblocking(False)
        sel.register(t, selectors.EVENT_READ, "tcp")
        sel.register(u, selectors.EVENT_READ, "udp")
        socks += [t, u]
        ports.append(port)
    _print({"ports": ports})
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                s: socket.socket = key.fileobj  # type: ignore[assignment]
                here = s.getsockname()[1]
                if key.data == "tcp":
                    conn, peer = s.accept()
                    with conn:
                        conn.settimeout(2.0)
                        conn.sendall(f"{peer[0]}:{peer[1]}".encode())
                    _print({"proto": "tcp", "port": here, "peer": f"{peer[0]}:{peer[1]}"})
                else:
                    _data, peer = s.recvfrom(2048)
                    s.sendto(f"{peer[0]}:{peer[1]}".encode(), peer)
                    _print({"proto": "udp", "port": here, "peer": f"{peer[0]}:{peer[1]}"})
    finally:
        sel.close()
        for s in socks:
            s.close()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def send(proto: str, to: list[str], sport: int, timeout: float) -> None:
    seen: list[str | None] = []
    if proto == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("0.0.0.0", sport))
            u.settimeout(timeout)
            for dest in to:
                u.sendto(b"hello", _addr(dest))
                try:
                    seen.append(u.recvfrom(2048)[0].decode())
                except OSError:
                    seen.append(None)
    else:
        for dest in to:
            try:
                with socket.create_connection(_addr(dest), timeout=timeout) as t:
                    t.sendall(b"hello")
                    seen.append(t.recv(2048).decode() or None)
            except OSError:
                seen.append(None)
    _print({"seen": seen})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.lab.probe")
    sub = p.add_subparsers(dest="verb", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--ports", type=int, default=1)
    s.add_argument("--seconds", type=float, default=60.0)
    c = sub.add_parser("send")
    c.add_argument("proto", choices=["udp", "tcp"])
    c.add_argument("--to", action="append", required=True)
    c.add_argument("--sport", type=int, default=0)
    c.add_argument("--timeout", type=float, default=2.0)
    a = p.parse_args(argv)
    if a.verb == "serve":
        serve(a.host, a.ports, a.seconds)
    else:
        send(a.proto, a.to, a.sport, a.timeout)


if __name__ == "__main__":
    main()
