"""A synchronous driver for the sans-IO relay cores, and readers of what they asked for.

`proxy.session` drives a core over real sockets with Trio. Unit tests, property tests and
the fuzz targets (fuzz/) drive the same cores with byte strings; this module is the one
copy of that driver, so that what "the driver answered" means is the same everywhere:
`Replayer.drain()` performs every action the core emitted and answers the two questions
a core asks synchronously (StartTls -> tls_started/tls_failed, CommitMessage ->
archive_result) from lists of verdicts. `apply_event` plays one named event, the
vocabulary of the fuzzers' inputs.

No trio, socket or ssl here (the same rule as the cores: a test enforces it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from proxy.actions import (
    Action,
    BeginMessage,
    CommitMessage,
    MessageData,
    RelayCore,
    SendClient,
    SendUpstream,
    Side,
    StartTls,
)

#: events that carry no bytes (`apply_event` ignores their data)
SIGNALS = ("upstream_lost", "client_lost", "timeout_client", "timeout_upstream", "eof")
#: every event kind `apply_event` knows
EVENT_KINDS = ("client", "upstream", "next", *SIGNALS)
#: byte runs at which dot-stuffed framing (proxy/dotstuff.py) is easy to get wrong: the
#: random sessions of both cores splice them into what they send
FRAMING_TOKENS = (b".\r\n", b"..\r\n", b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\r\n")


@dataclass(frozen=True)
class ArchiveAnswer:
    """Marker in a replay log: the driver answered CommitMessage with archive_result(ok)."""

    ok: bool


@dataclass
class Replayer:
    """Plays `proxy.session` against a core synchronously, recording every action.

    `archive_verdicts` / `tls_verdicts` are consumed in order; when they run out the
    answer is `archive_ok` / success. With `markers`, an `ArchiveAnswer` is appended to
    `log` after the batch in which a CommitMessage was answered (what the invariant
    checkers need to know when the copy became durable). `on_upstream` sees every byte
    sent upstream (a scripted provider that answers what it is sent).
    """

    relay: RelayCore
    archive_ok: bool = True
    archive_error: str = "cannot write message file: No space left on device"
    archive_verdicts: list[bool] = field(default_factory=list)
    tls_verdicts: list[bool] = field(default_factory=list)
    markers: bool = False
    on_upstream: Callable[[bytes], None] | None = None
    log: list[Action] = field(default_factory=list)
    commits: int = 0
    answers: list[bool] = field(default_factory=list)

    def _verdict(self) -> bool:
        return self.archive_verdicts.pop(0) if self.archive_verdicts else self.archive_ok

    def drain(self) -> list[Action]:
        """Perform the pending actions (and those they cause); return them."""
        new: list[Action] = []
        while acts := self.relay.actions():
            answered: list[bool] = []
            for a in acts:
                new.append(a)
                if isinstance(a, SendUpstream) and self.on_upstream is not None:
                    self.on_upstream(a.data)
                elif isinstance(a, StartTls):
                    if self.tls_verdicts.pop(0) if self.tls_verdicts else True:
                        self.relay.tls_started(a.side, "TLSv1.3")
                    else:
                        self.relay.tls_failed(a.side, "handshake failed")
                elif isinstance(a, CommitMessage):
                    ok = self._verdict()
                    self.commits += 1
                    self.answers.append(ok)
                    self.relay.archive_result(ok, None if ok else self.archive_error)
                    answered.append(ok)
            if self.markers:
                new += [ArchiveAnswer(ok) for ok in answered]  # type: ignore[misc]
        self.log += new
        return new


def apply_event(relay: RelayCore, kind: str, data: bytes) -> None:
    """Play one event: bytes from a side, the side the core is reading, or a signal."""
    if kind == "client":
        relay.receive_client(data)
    elif kind == "upstream":
        relay.receive_upstream(data)
    elif kind == "next":  # what a real driver does: read the side the core names
        if relay.reading is Side.CLIENT:
            relay.receive_client(data)
        elif relay.reading is Side.UPSTREAM:
            relay.receive_upstream(data)
    elif kind == "upstream_lost":
        relay.upstream_lost("reset")
    elif kind == "client_lost":
        relay.client_lost()
    elif kind == "timeout_client":
        relay.timeout(Side.CLIENT)
    elif kind == "timeout_upstream":
        relay.timeout(Side.UPSTREAM)
    elif kind == "eof":
        (relay.receive_client if relay.reading is Side.CLIENT else relay.receive_upstream)(b"")
    else:
        raise ValueError(kind)


def to_client(actions: Iterable[object]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendClient))


def to_upstream(actions: Iterable[object]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendUpstream))


def message_data(actions: Iterable[object]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, MessageData))


def of_type(actions: Iterable[object], kind: type) -> list[Action]:
    return [a for a in actions if isinstance(a, kind)]  # type: ignore[misc]


def reports(actions: Iterable[object]) -> list[dict[str, object]]:
    """The cores' part of each report, as the `.mpr` JSON holds it."""
    return [a.report.to_json() for a in actions if isinstance(a, BeginMessage)]


def chunked(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """Split `data` at the given offsets (out-of-range and duplicate cuts ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]
