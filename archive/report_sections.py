"""Typed sections of an `.mpr` report (docs/mpr-format.md), and their one JSON form.

Theory of operation. A proxied message's report is assembled by three hands: the
protocol core knows the direction and the envelope (`MessageStart`, carried by
`proxy.actions.BeginMessage`), the session driver adds the listener and both peers
(`SessionReport`), and the spool (archive/spool.py) adds what only it knows (id, time,
size, hash, outcome) when it writes the document. Each hand fills a frozen dataclass
instead of a `dict[str, Any]`, so a misspelt key is a type error, not a silently
different report.

`to_json()` is the one place a section becomes JSON: fields in declaration order (that
order is the key order on disk, so declare them in the order of docs/mpr-format.md),
tuples as lists, nested sections recursively. The `.mpr` bytes are what they were when
the sections were dicts.

Standard library only: the sans-IO cores import this module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

#: `direction` of a report: SMTP out, POP3 in, pulled from a mailbox, journal listener
Direction = Literal["outgoing", "incoming", "archived", "journal"]


#: a type -> the field names of a section class in declaration order, or None for any
#: other type seen (`dataclasses.fields()` walks the class on every call, and even
#: `is_dataclass()` on each leaf value was measurable once per message on the hot path)
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def to_json(section: object) -> Any:
    """A section (or a value inside one) as JSON-ready data, keys in field order."""
    kind = type(section)
    try:
        names = _FIELD_NAMES[kind]
    except KeyError:
        names = None
        if dataclasses.is_dataclass(section) and not isinstance(section, type):
            names = tuple(f.name for f in dataclasses.fields(section))
        _FIELD_NAMES[kind] = names
    if names is not None:
        return {name: to_json(getattr(section, name)) for name in names}
    if isinstance(section, tuple | list):
        return [to_json(v) for v in section]
    return section


class _Section:
    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = to_json(self)
        return out


@dataclass(frozen=True, slots=True)
class SmtpSection(_Section):
    """`smtp`: the envelope of one SMTP transaction (rcpt_to includes BCC recipients)."""

    helo: str | None
    mail_from: str | None
    rcpt_to: tuple[str, ...]
    auth_user: str | None


@dataclass(frozen=True, slots=True)
class Pop3Section(_Section):
    """`pop3`: the account, the message's UIDL (None if unknown) and its number."""

    user: str | None
    uidl: str | None
    msg: int | None


@dataclass(frozen=True, slots=True)
class ClientSection(_Section):
    """`client`: the peer that connected to the listener."""

    ip: str
    port: int
    tls: str | None  # the negotiated version ("TLSv1.3"), None for plaintext


@dataclass(frozen=True, slots=True)
class TargetSection(_Section):
    """`target`: the provider the session was relayed to."""

    host: str
    port: int
    tls: str | None


@dataclass(frozen=True, slots=True)
class MessageStart(_Section):
    """What a protocol core knows when a message starts (`BeginMessage`)."""

    direction: Direction
    smtp: SmtpSection | None = None
    pop3: Pop3Section | None = None

    def to_json(self) -> dict[str, Any]:
        """The direction and the section of the core's own protocol only."""
        out: dict[str, Any] = {"direction": self.direction}
        if self.smtp is not None:
            out["smtp"] = self.smtp.to_json()
        if self.pop3 is not None:
            out["pop3"] = self.pop3.to_json()
        return out


@dataclass(frozen=True, slots=True)
class SessionReport(_Section):
    """The sections of a proxied message's `.mpr` that the spool does not fill itself."""

    listener: str
    client: ClientSection | None
    target: TargetSection | None
    start: MessageStart
    #: further sections, written after the known ones (none for proxied sessions)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The same mapping the session used to build: peers, then the core's part."""
        out: dict[str, Any] = {
            "listener": self.listener,
            "client": to_json(self.client),
            "target": to_json(self.target),
        }
        out.update(self.start.to_json())
        out.setdefault("smtp", None)
        out.setdefault("pop3", None)
        out.update(self.extra)
        return out
