"""Multidrop: recover the real recipients of a message from a catch-all mailbox's headers.

A mailbox that receives a copy of all company mail has lost the SMTP envelope, so the
owners are read back from the headers the delivering servers left, in this order:

1. `Delivered-To` (Postfix, qmail, Dovecot LDA)
2. `X-Original-To` (Postfix: the address before alias expansion)
3. `Envelope-To` (Exim)
4. `X-Envelope-To` (Sendmail milters, fetchmail setups)
5. `Received: ... for <addr>` clauses (any MTA that logs the single recipient)
6. then `To` and `Cc`

All addresses found are returned once each, in that order. Only addresses that belong
to archive users create ownership, so an external To/Cc address costs nothing. Only the
header block is parsed (bounded: `MAX_HEADER_BYTES`), never the body.
"""

from __future__ import annotations

import email.utils
import re
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32

ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")
#: headers beyond this many bytes are not looked at (a pathological message)
MAX_HEADER_BYTES = 256 * 1024
_FOR = re.compile(r"\bfor\s+<?([^\s<>;@]+@[^\s<>;]+?)>?\s*(?:;|\(|$)", re.I)
_ADDR = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


def header_block(raw: bytes) -> bytes:
    head = raw[:MAX_HEADER_BYTES]
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = head.find(sep)
        if i >= 0:
            return head[: i + len(sep)]
    return head


def _clean(addr: str) -> str | None:
    a = addr.strip().strip("<>").strip().lower()
    return a if _ADDR.match(a) else None


def _text(value: object) -> str:
    try:
        return str(make_header(decode_header(str(value))))
    except Exception:  # noqa: BLE001 - a broken encoded-word: use it as it is
        return str(value)


def recipients(raw: bytes) -> list[str]:
    """Every recipient address recoverable from the headers, in the documented order."""
    msg = BytesHeaderParser(policy=compat32).parsebytes(header_block(raw))
    found: list[str] = []
    for name in ENVELOPE_HEADERS:
        for value in msg.get_all(name) or []:
            for _n, addr in email.utils.getaddresses([_text(value)]):
                if (a := _clean(addr)) is not None:
                    found.append(a)
    for value in msg.get_all("Received") or []:
        flat = " ".join(str(value).split())
        for m in _FOR.finditer(flat):
            if (a := _clean(m.group(1))) is not None:
                found.append(a)
    for name in ("To", "Cc"):
        values = [_text(v) for v in msg.get_all(name) or []]
        for _n, addr in email.utils.getaddresses(values):
            if (a := _clean(addr)) is not None:
                found.append(a)
    return list(dict.fromkeys(found))
