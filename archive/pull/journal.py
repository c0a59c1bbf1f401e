"""Exchange envelope journal reports -> the original message and its real recipients.

Exchange (Online and on-premises) journals a message by sending a *journal report* to
the journaling mailbox: a message with the header `X-MS-Journal-Report:`, whose body is
multipart/mixed with

1. a text part, the envelope: `Sender: a@x`, `Subject: ...`, `Message-Id: ...` and one
   line per recipient -- `To: b@x`, `Cc: c@x`, `Bcc: d@x` (or `Recipient: e@x`), where
   a distribution list's member reads `To: m@x, Expanded: list@x` and a forwarded one
   `To: f@x, Forwarded: g@x`;
2. the original message, attached as `message/rfc822`.

`unwrap()` returns the original's exact bytes (cut out of the report at byte level,
so nothing is re-encoded; base64 / quoted-printable attachments are decoded) and every
recipient the envelope names, Bcc and list members included, so they become envelope
recipients -- owners -- of the archived original. Anything else (a plain BCC-style
journal copy, a report that does not parse) is archived as received: `unwrap()`
returns None.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from .multidrop import header_block

JOURNAL_HEADER = "X-MS-Journal-Report"
#: the envelope part is a few lines per recipient; anything longer is not one
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
_ADDR = re.compile(r"[^\s<>,;:\"]+@[^\s<>,;:\"]+")
_RCPT_FIELDS = ("to", "cc", "bcc", "recipient", "recipients")


@dataclass
class Unwrapped:
    original: bytes
    sender: str | None
    recipients: list[str] = field(default_factory=list)
    message_id: str | None = None


def is_journal_report(raw: bytes) -> bool:
    return _headers(header_block(raw)).get(JOURNAL_HEADER) is not None


def _headers(block: bytes) -> Message:
    return BytesHeaderParser(policy=compat32).parsebytes(block)


def _parts(body: bytes, boundary: bytes) -> list[bytes]:
    """The body parts of a multipart body (RFC 2046 5.1.1), exact bytes."""
    delim = b"--" + boundary
    # a delimiter line is CRLF "--boundary" (the CRLF belongs to the delimiter)
    text = b"\r\n" + body
    pieces = re.split(b"\r?\n" + re.escape(delim) + b"(--)?[ \t]*(?=\r?\n|$)", text)
    # re.split with a group: [preamble, g, part, g, part, ..., epilogue]
    parts = []
    for i in range(2, len(pieces), 2):
        closing = pieces[i - 1] is not None
        if closing:
            break
        part = pieces[i]
        parts.append(part[2:] if part.startswith(b"\r\n") else part.lstrip(b"\n"))
    return parts


def _decode(body: bytes, cte: str) -> bytes:
    cte = cte.strip().lower()
    if cte == "base64":
        try:
            return base64.b64decode(b"".join(body.split()), validate=False)
        except (binascii.Error, ValueError):
            return body
    if cte == "quoted-printable":
        return quopri.decodestring(body)
    return body


def _envelope(text: str) -> tuple[str | None, str | None, list[str]]:
    sender: str | None = None
    message_id: str | None = None
    rcpts: list[str] = []
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        if key == "sender":
            found = _ADDR.findall(value)
            sender = found[0].lower() if found else sender
        elif key == "message-id":
            message_id = value.strip() or None
        elif key in _RCPT_FIELDS:
            # "To: m@x, Expanded: list@x" / "Bcc: d@x" / "Recipient: e@x, Forwarded: f@x"
            rcpts.extend(a.lower().strip(".") for a in _ADDR.findall(value))
    return sender, message_id, list(dict.fromkeys(rcpts))


def unwrap(raw: bytes) -> Unwrapped | None:
    """The original message and recipients of an Exchange journal report, or None."""
    block = header_block(raw)
    top = _headers(block)
    if top.get(JOURNAL_HEADER) is None or top.get_content_maintype() != "multipart":
        return None
    boundary = top.get_boundary()
    if not boundary:
        return None
    original: bytes | None = None
    envelope: str | None = None
    for part in _parts(raw[len(block) :], boundary.encode("utf-8", "replace")):
        phead = header_block(part)
        ph = _headers(phead)
        payload = part[len(phead) :]
        ctype = ph.get_content_type()
        cte = str(ph.get("Content-Transfer-Encoding", "7bit"))
        if ctype == "message/rfc822" and original is None:
            original = _decode(payload, cte)
        elif ctype == "text/plain" and envelope is None and len(payload) <= MAX_ENVELOPE_BYTES:
            charset = ph.get_content_charset() or "utf-8"
            try:
                envelope = _decode(payload, cte).decode(charset, "replace")
            except LookupError:
                envelope = _decode(payload, cte).decode("utf-8", "replace")
    if original is None or envelope is None:
        return None
    sender, message_id, rcpts = _envelope(envelope)
    if not rcpts:
        return None
    return Unwrapped(original, sender, rcpts, message_id)
