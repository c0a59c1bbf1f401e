"""Drive a `Pop3Relay` with byte strings, the way `proxy.session` drives it.

`drive()` plays a driver: it reads the side the core names in `reading`, answers
StartTls and CommitMessage synchronously, and records every action. Upstream input is
given per reply (a real server answers only after it got the command), each reply as
a list of chunks; client input is one list of chunks (clients may pipeline).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from proxy.actions import (
    Action,
    BeginMessage,
    CommitMessage,
    MessageData,
    SendClient,
    SendUpstream,
    Side,
    StartTls,
)
from proxy.pop3 import Pop3Relay
from proxy.settings import RelaySettings

GREETING = b"+OK Dovecot ready. <1896.697170952@dbc.mtview.ca.us>\r\n"
CAPA_REPLY = (
    b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nSTLS\r\nUSER\r\n"
    b"SASL PLAIN LOGIN\r\n.\r\n"
)
# A message with lines that need byte-stuffing, an empty line, 8-bit and a bare CR.
MESSAGE = (
    b"From: a@example.org\r\nSubject: caf\xc3\xa9\r\n\r\n.starts with a dot\r\n"
    b"..two dots\r\n.\r\nbare\rCR\r\n\r\nend\r\n"
)
STUFFED = (
    b"From: a@example.org\r\nSubject: caf\xc3\xa9\r\n\r\n..starts with a dot\r\n"
    b"...two dots\r\n..\r\nbare\rCR\r\n\r\nend\r\n"
)
RETR_STATUS = b"+OK 120 octets\r\n"


def make_relay(**settings: object) -> Pop3Relay:
    relay = Pop3Relay(RelaySettings(**settings))  # type: ignore[arg-type]
    relay.start()
    return relay


def merged(actions: Iterable[Action]) -> list[Action]:
    """Actions with consecutive byte actions of one kind joined (chunking-independent)."""
    out: list[Action] = []
    for a in actions:
        if isinstance(a, SendClient | SendUpstream | MessageData) and out:
            last = out[-1]
            if type(last) is type(a):
                out[-1] = type(a)(last.data + a.data)  # type: ignore[union-attr]
                continue
        out.append(a)
    return out


def to_client(actions: Iterable[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendClient))


def to_upstream(actions: Iterable[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendUpstream))


def message_data(actions: Iterable[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, MessageData))


def of_type(actions: Iterable[Action], kind: type) -> list[Action]:
    return [a for a in actions if isinstance(a, kind)]


def chunked(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """Split `data` at the given offsets (out-of-range and duplicate cuts ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


@dataclass
class Driver:
    relay: Pop3Relay
    archive_ok: bool = True
    archive_error: str = "cannot write message file: No space left on device"
    log: list[Action] = field(default_factory=list)

    def drain(self) -> list[Action]:
        new: list[Action] = []
        while acts := self.relay.actions():
            for a in acts:
                new.append(a)
                if isinstance(a, StartTls):
                    self.relay.tls_started(a.side, "TLSv1.3")
                elif isinstance(a, CommitMessage):
                    error = None if self.archive_ok else self.archive_error
                    self.relay.archive_result(self.archive_ok, error)
        self.log += new
        return new

    def run(self, client: Sequence[bytes], replies: Sequence[Sequence[bytes]]) -> list[Action]:
        """Feed client chunks and upstream reply chunks as `reading` asks; all actions."""
        client_q = [c for c in client if c]
        upstream_q = [c for reply in replies for c in reply if c]
        self.drain()
        while self.relay.reading is not None:
            if self.relay.reading is Side.CLIENT:
                if not client_q:
                    break
                self.relay.receive_client(client_q.pop(0))
            else:
                if not upstream_q:
                    break
                self.relay.receive_upstream(upstream_q.pop(0))
            self.drain()
        return self.log


def drive(
    client: Sequence[bytes],
    replies: Sequence[Sequence[bytes]],
    *,
    archive_ok: bool = True,
    **settings: object,
) -> list[Action]:
    """A fresh relay, greeted with GREETING unless `replies` starts otherwise."""
    driver = Driver(make_relay(**settings), archive_ok=archive_ok)
    return driver.run(client, replies)


def reports(actions: Iterable[Action]) -> list[dict[str, object]]:
    return [a.report for a in actions if isinstance(a, BeginMessage)]
