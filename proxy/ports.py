"""Sockets shared by worker processes: SO_REUSEPORT binding (Linux).

The supervisor (proxy.workers) binds each listener's address with SO_REUSEPORT and
keeps that socket bound but not listening: the kernel then hands connections only to the
workers' listening sockets on the same port, yet no program without SO_REUSEPORT under
another user can take the port, and a configured port 0 resolves to one number that all
workers then bind.
"""

from __future__ import annotations

import socket


def bind_reuseport(host: str, port: int) -> list[socket.socket]:
    """Bound (not listening) SO_REUSEPORT sockets for every address of `host`."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen: set[tuple] = set()
    try:
        for family, type_, proto, _name, addr in infos:
            key = (family, addr[0])
            if key in seen:
                continue
            seen.add(key)
            sock = socket.socket(family, type_, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr[0], port, *addr[2:]))
            port = sock.getsockname()[1]  # port 0: every address gets the same one
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks
