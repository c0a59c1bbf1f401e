"""The floor of a durable POP3 relay in Python: the least work that keeps invariant 1.

`python bench/pop3_floor.py serve LISTEN_PORT TARGET_PORT FILE` relays POP3 between
clients on LISTEN_PORT and the server on TARGET_PORT, one blocking thread per connection
and no event loop. It understands just enough POP3 to hold each RETR's terminating
".\\r\\n" back: the body is forwarded as it arrives, then written with one `pwrite` to
FILE (pre-zeroed, used as a ring, like a recycled journal segment) and `fdatasync`'d,
and only then does the client get the terminator. No parsing beyond the command word
and the terminator, no unstuffing, no hash, no report files, no log line, no group
commit (concurrent sessions each flush on their own), no limits or timeouts: nothing a
product can do without. It answers "how far is mailtee from what any relay that
flushes before the terminator must pay on this machine?"; bench/pop3_relay.py runs it
in the same run as mailtee, next to bench/relay_floor.py's byte pump (no durability).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

TERMINATOR = b"\r\n.\r\n"
#: commands whose +OK answer is multi-line (RFC 1939, 2449) in the bench's dialogue
MULTILINE = {b"RETR", b"UIDL", b"LIST", b"TOP", b"CAPA"}
RING = 64 * 1024 * 1024
RECEIVE = 256 * 1024


class Ring:
    """A pre-zeroed file whose regions are handed out in turn (a journal stand-in)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        zeros = bytes(1 << 20)
        for _ in range(RING >> 20):
            os.write(self.fd, zeros)
        os.fsync(self.fd)
        self._at = 0
        self._lock = threading.Lock()

    def write_durably(self, data: bytes) -> None:
        with self._lock:
            at = self._at if self._at + len(data) <= RING else 0
            self._at = at + len(data)
        os.pwrite(self.fd, data, at)
        os.fdatasync(self.fd)


def _status(up: socket.socket, client: socket.socket, rest: bytes) -> tuple[bytes, bytes]:
    """Relay one status line; returns it and what followed it."""
    buf = rest
    while (nl := buf.find(b"\r\n")) < 0:
        data = up.recv(RECEIVE)
        if not data:
            raise ConnectionError("upstream closed")
        buf += data
    client.sendall(buf[: nl + 2])
    return buf[: nl + 2], buf[nl + 2 :]


def _body(up: socket.socket, client: socket.socket, rest: bytes, ring: Ring | None) -> bytes:
    """Relay a multi-line body but its ".\\r\\n", flushed first if `ring`; the rest."""
    parts: list[bytes] = []
    buf, skip = b"\r\n" + rest, 2  # the status line's CRLF (never sent again)
    while (end := buf.find(TERMINATOR)) < 0:
        cut = len(buf) - len(TERMINATOR) + 1  # a split terminator stays decidable
        if cut > skip:
            client.sendall(buf[skip:cut])
            parts.append(buf[skip:cut])
            buf, skip = buf[cut:], 0
        data = up.recv(RECEIVE)
        if not data:
            raise ConnectionError("upstream closed")
        buf += data
    if end + 2 > skip:
        client.sendall(buf[skip : end + 2])
        parts.append(buf[skip : end + 2])
    if ring is not None:
        ring.write_durably(b"".join(parts))
    client.sendall(b".\r\n")
    return buf[end + len(TERMINATOR) :]


def _relay(client: socket.socket, target: int, ring: Ring) -> None:
    with client, socket.create_connection(("127.0.0.1", target)) as up:
        for s in (client, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _, pending = _status(up, client, b"")  # the greeting
        commands = b""
        while True:
            while (nl := commands.find(b"\r\n")) < 0:
                data = client.recv(RECEIVE)
                if not data:
                    return
                commands += data
            line, commands = commands[: nl + 2], commands[nl + 2 :]
            up.sendall(line)
            word = line.split(b" ", 1)[0].strip().upper()
            status, pending = _status(up, client, pending)
            if word in MULTILINE and status.startswith(b"+OK"):
                pending = _body(up, client, pending, ring if word == b"RETR" else None)
            if word == b"QUIT":
                return


def serve(listen_port: int, target_port: int, path: Path) -> None:
    ring = Ring(path)
    with socket.create_server(("127.0.0.1", listen_port), backlog=64) as ls:
        while True:
            client, _ = ls.accept()
            threading.Thread(
                target=_safe_relay, args=(client, target_port, ring), daemon=True
            ).start()


def _safe_relay(client: socket.socket, target: int, ring: Ring) -> None:
    try:
        _relay(client, target, ring)
    except OSError:
        pass


def start(listen_port: int, target_port: int, path: Path) -> subprocess.Popen[bytes]:
    """The floor relay as its own process group (stop it with _common.stop)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "serve"]
    cmd += [str(listen_port), str(target_port), str(path)]
    proc = subprocess.Popen(cmd, start_new_session=True)
    from _common import wait_port

    wait_port(listen_port, timeout=60)
    time.sleep(0.1)
    return proc


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
    else:
        print(__doc__)
        raise SystemExit(2)
