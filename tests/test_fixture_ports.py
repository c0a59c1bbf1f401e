"""tests/fixtures/net.free_port: ports handed out together are distinct.

A server given one port twice does not start (Dovecot: "duplicate listener", seen in CI
when its POP3 and auth listeners drew the same port); the kernel may offer a port again
as soon as the probe socket that found it is closed.
"""

from __future__ import annotations

import socket

import fixtures.net as net


def test_a_port_the_kernel_offers_again_is_not_handed_out_twice(monkeypatch) -> None:
    offered = iter([47001, 47001, 47001, 47002])

    class Probe(socket.socket):
        def getsockname(self):  # type: ignore[override]
            return ("127.0.0.1", next(offered))

    monkeypatch.setattr(net.socket, "socket", Probe)
    assert [net.free_port(), net.free_port()] == [47001, 47002]


def test_ports_handed_out_in_a_row_are_distinct() -> None:
    ports = [net.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
