"""What a sans-IO relay core asks its driver to do.

Theory of operation. A relay core (`proxy.smtp.relay.SmtpRelay`, `proxy.pop3.relay.
Pop3Relay`) owns both sides of one proxied session. The driver (`proxy.session`) feeds
it bytes with `receive_client(data)` / `receive_upstream(data)` (b"" = EOF), then drains
`core.actions()` and performs each action in order. Actions that need an answer are
answered synchronously by the driver before it drains again:

- `StartTls(side)`      -> `core.tls_started(side, version)` or `core.tls_failed(side)`
- `CommitMessage()`     -> `core.archive_result(ok)` (after the copy is durable or failed)
- a failed send/receive -> `core.upstream_lost()` / `core.client_lost()`

`core.reading` names the side the driver must read next (`None` once the core is
finished). The cores are lockstep: while they wait for an upstream reply they do not
read the client, so a STARTTLS upgrade never races a pending read and no plaintext is
ever replayed into TLS.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from archive.report_sections import MessageStart
from proxy.login import VerifyLogin  # the local-login action (proxy/login.py)


class Side(enum.Enum):
    CLIENT = "client"
    UPSTREAM = "upstream"


@dataclass(frozen=True, slots=True)
class SendClient:
    data: bytes


@dataclass(frozen=True, slots=True)
class SendUpstream:
    data: bytes


@dataclass(frozen=True, slots=True)
class StartTls:
    side: Side


@dataclass(frozen=True, slots=True)
class BeginMessage:
    """A message starts; `report` is the protocol part of the `.mpr` (direction, smtp/pop3)."""

    report: MessageStart


@dataclass(frozen=True, slots=True)
class MessageData:
    """Message bytes for the copy (dot-unstuffed; exactly what the `.eml` holds)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CommitMessage:
    """Make the copy durable now; answer with `core.archive_result(ok)`."""

    outcome: str = "pending"
    reply: str | None = None


@dataclass(frozen=True, slots=True)
class AbortMessage:
    """Drop the copy in progress: the message did not complete."""


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """Rewrite the committed report with the upstream's verdict."""

    outcome: str
    reply: str | None


@dataclass(frozen=True, slots=True)
class CloseUpstream:
    """Close the upstream connection (e.g. to abort a transaction before its final dot)."""


@dataclass(frozen=True, slots=True)
class Close:
    """End the session: close both sides."""


@dataclass(frozen=True, slots=True)
class LogTransaction:
    """One log line per transaction (message) with these fields; never a secret."""

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A notable event for the operator's log (refusals, upstream trouble)."""

    level: str
    message: str


Action = (  # noqa: UP007 - a union alias for type hints
    SendClient
    | SendUpstream
    | StartTls
    | BeginMessage
    | MessageData
    | CommitMessage
    | AbortMessage
    | RecordOutcome
    | CloseUpstream
    | Close
    | LogTransaction
    | LogEvent
    | VerifyLogin
)


class RelayCore:
    """The interface every sans-IO relay core implements (documentation + base class)."""

    #: the side the driver must read next; None once the session is over
    reading: Side | None = Side.UPSTREAM

    def start(self) -> None:
        """The upstream TCP (and implicit TLS) connection is up; expect its greeting."""
        raise NotImplementedError

    def upstream_unavailable(self, reason: str) -> None:
        """Connecting to the provider failed; tell the client and close."""
        raise NotImplementedError

    def receive_client(self, data: bytes) -> None:
        raise NotImplementedError

    def receive_upstream(self, data: bytes) -> None:
        raise NotImplementedError

    def actions(self) -> list[Action]:
        """Return and forget the pending actions, in order."""
        raise NotImplementedError

    def tls_started(self, side: Side, version: str) -> None:
        raise NotImplementedError

    def tls_failed(self, side: Side, reason: str) -> None:
        raise NotImplementedError

    def archive_result(self, ok: bool, error: str | None = None) -> None:
        raise NotImplementedError

    def upstream_lost(self, reason: str = "connection lost") -> None:
        raise NotImplementedError

    def client_lost(self) -> None:
        raise NotImplementedError

    def timeout(self, side: Side) -> None:
        """A read on `side` took longer than its limit."""
        raise NotImplementedError
