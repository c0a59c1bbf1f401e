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
    """A message starts; `report` is the protocol part of the `.mpr` (smtp/pop3 section)."""

    report: dict[str, Any]


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


Action = (
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
)
