"""Drive a `Pop3Relay` with byte strings, the way `proxy.session` drives it.

`drive()` plays a driver: it reads the side the core names in `reading`, answers
StartTls and CommitMessage synchronously, and records every action. Upstream input is
given per reply (a real server answers only after it got the command), each reply as
a list of chunks; client input is one list of chunks (clients may pipeline).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from proxy.actions import (
    Action,
    MessageData,
    SendClient,
    SendUpstream,
    Side,
)
from proxy.pop3 import Pop3Relay
from proxy.replay import (  # noqa: F401 - the harness API the tests import
    Replayer,
    chunked,
    message_data,
    of_type,
    reports,
    to_client,
    to_upstream,
)
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


class Driver(Replayer):
    """Plays `proxy.session` against a POP3 core (see proxy/replay.py)."""

    def __init__(self, relay: Pop3Relay, *, archive_ok: bool = True) -> None:
        super().__init__(relay, archive_ok=archive_ok)

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
