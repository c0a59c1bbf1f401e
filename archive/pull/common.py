"""What the IMAP and POP3 pullers share: results, errors, TLS contexts, limits, hooks."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from accounts import sasl
from archive import tls_client
from archive.errors import ArchiveError
from archive.timefmt import utc_iso

#: socket timeout for every server read/write (a stalled server fails the mailbox)
SERVER_TIMEOUT = 120.0
#: fetch messages in batches of at most this many messages / bytes (memory bound)
BATCH_MESSAGES = 200
BATCH_BYTES = 16 * 1024 * 1024
#: messages larger than this are fetched in ranges of PARTIAL_CHUNK bytes (IMAP partial
#: fetch, RFC 3501 6.4.5 BODY[]<origin.octets>), so memory stays bounded however big
PARTIAL_OVER = 8 * 1024 * 1024
PARTIAL_CHUNK = 4 * 1024 * 1024
#: the multidrop header parser looks at this much of the head of each message
HEAD_BYTES = 256 * 1024

#: progress(done, total) after each committed batch; tests use it to inject faults
Progress = Callable[[int, int], None]
#: tokens(account name) -> (a valid access token, the account's SASL mechanism: xoauth2 or
#: oauthbearer); blocking (accounts.blocking builds one)
TokenSource = Callable[[str], tuple[str, str]]


class PullError(ArchiveError):
    """A mailbox could not be pulled; one line, never a password."""


@dataclass(frozen=True, slots=True)
class Credential:
    """How a pull logs in to its mailbox: the password from secrets.toml, or (with
    `[[mailbox]] account`) an OAuth2 access token sent as SASL XOAUTH2 (what Microsoft
    365 and Gmail accept for IMAP and POP3) or OAUTHBEARER (RFC 7628), as the account's
    `sasl` says. `repr` shows neither secret."""

    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    mechanism: str = "xoauth2"

    @property
    def secret(self) -> str | None:
        """What must never be shown (scrub())."""
        return self.token or self.password

    def check(self, user: str) -> None:
        """Refuse (PullError) a user name or token SASL cannot carry, before anything is
        sent (imapclient builds its own initial response)."""
        assert self.token is not None
        try:
            sasl.check(user, self.token)
        except ValueError as e:
            raise PullError(str(e)) from None

    def initial_response(self, user: str, host: str, port: int) -> bytes:
        """The base64 SASL initial response of `mechanism` (accounts.sasl, as the relay's
        upstream logins send it). Raises PullError for what SASL cannot carry."""
        assert self.token is not None
        try:
            return sasl.initial_response(self.mechanism, user, self.token, host, port)
        except ValueError as e:
            raise PullError(str(e)) from None


def scrub(text: str, secret: str | None) -> str:
    """Remove a password from text that is about to be shown (belt and braces)."""
    flat = " ".join(str(text).split())
    if secret:
        flat = flat.replace(secret, "********")
    return flat


def client_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """The context for TLS towards the mailbox's server (archive/tls_client.py)."""
    return tls_client.client_context(
        verify, ca_file, lambda why: PullError(f"cannot load CA file {ca_file}: {why}")
    )


def iso(t: dt.datetime | float | None) -> str | None:
    return None if t is None else utc_iso(t)


@dataclass
class BoxResult:
    """The outcome of pulling one mailbox (the `--json` summary's per-mailbox entry)."""

    name: str
    protocol: str
    ok: bool = True
    error: str | None = None
    new: int = 0  # messages archived (or, with --dry-run, that would be)
    known: int = 0  # seen again after a UIDVALIDITY change, already archived
    bytes: int = 0
    folders: dict[str, int] = field(default_factory=dict)  # folder -> new
    deleted: int = 0
    would_delete: list[dict[str, Any]] = field(default_factory=list)
    delete_skipped: str | None = None
    recovered: int = 0  # in-flight messages found durable after a crash
    seconds: float = 0.0

    def fail(self, message: str) -> None:
        self.ok = False
        self.error = self.error or message

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "protocol": self.protocol,
            "ok": self.ok,
            "error": self.error,
            "new": self.new,
            "known": self.known,
            "bytes": self.bytes,
            "folders": dict(self.folders),
            "deleted": self.deleted,
            "would_delete": list(self.would_delete),
            "delete_skipped": self.delete_skipped,
            "recovered": self.recovered,
            "seconds": round(self.seconds, 3),
        }
