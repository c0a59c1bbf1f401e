"""Per-session settings handed to a sans-IO relay core (no I/O objects, no secrets in repr)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: how one side of a session speaks TLS (the config model's `TlsSetting` is this type,
#: with the "stls" alias accepted on input)
TlsMode = Literal["none", "starttls", "implicit"]
#: what a core does when the copy of a message cannot be made durable
ArchiveFailurePolicy = Literal["reject", "pass"]


@dataclass(frozen=True, slots=True)
class RelaySettings:
    hostname: str = "mailtee.localdomain"
    #: the client side as the listener offers it
    client_tls: TlsMode = "none"
    #: how the proxy talks to the provider
    target_tls: TlsMode = "none"
    #: credentials the proxy injects upstream (smtp); None = relay the client's own AUTH
    target_user: str | None = None
    target_password: str | None = field(default=None, repr=False)
    #: "reject" (fail closed) or "pass" (relay anyway, alert)
    on_archive_failure: ArchiveFailurePolicy = "reject"
    #: longest command or reply line accepted, CRLF included (RFC 5321 4.5.3.1.4: >= 512)
    max_line_length: int = 2048
    #: largest message accepted (SMTP: 552 5.3.4; also caps SIZE= and the EHLO SIZE)
    max_message_size: int = 100 * 1024 * 1024
    #: commands per session before the proxy closes it (421)
    max_commands: int = 10_000
