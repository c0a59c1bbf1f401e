"""Learn the account name from a client's SASL exchange (RFC 5034), never the secret.

Theory of operation. The relay passes AUTH and every continuation line through
verbatim; it only peeks at the first client response to record which account logged in
(the report's `pop3.user`), and only keeps that name -- decoded passwords are dropped at
once and nothing of the exchange is ever logged. Supported: PLAIN (RFC 4616: the
authorization identity if given, otherwise the authentication identity -- the mailbox
being opened), LOGIN (the first response is the user name) and CRAM-MD5 (RFC 2195:
"name digest"). Other mechanisms log in fine but leave the account unknown (None).
"""

from __future__ import annotations

import base64
import binascii

#: RFC 5034 section 4: a client response "*" cancels the exchange.
CANCEL = b"*"
#: RFC 5034 section 4: "=" as initial response stands for an empty one.
EMPTY_INITIAL_RESPONSE = b"="


def _decode(response: bytes) -> bytes | None:
    try:
        return base64.b64decode(response.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def _text(raw: bytes) -> str | None:
    name = raw.decode("utf-8", "replace").strip()
    return name or None


def _account_from(mechanism: str, decoded: bytes) -> str | None:
    if mechanism == "PLAIN":
        parts = decoded.split(b"\0")
        if len(parts) != 3:
            return None
        return _text(parts[0] or parts[1])
    if mechanism == "LOGIN":
        return _text(decoded)
    if mechanism == "CRAM-MD5":
        name, _, _ = decoded.rpartition(b" ")
        return _text(name)
    return None


class SaslAccount:
    """Watches one AUTH exchange; `account` is the name once the first response is seen."""

    def __init__(self, mechanism: str, initial_response: bytes | None) -> None:
        self.mechanism = mechanism.upper()
        self.account: str | None = None
        self._seen_response = False
        if initial_response is not None and initial_response != EMPTY_INITIAL_RESPONSE:
            self._first_response(initial_response)

    def client_line(self, line: bytes) -> None:
        """A continuation line from the client (CRLF included)."""
        if not self._seen_response:
            self._first_response(line.rstrip(b"\r\n"))

    def _first_response(self, response: bytes) -> None:
        self._seen_response = True
        if response == CANCEL:
            return
        decoded = _decode(response)
        if decoded is not None:
            self.account = _account_from(self.mechanism, decoded)
