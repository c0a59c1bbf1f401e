"""Keep credentials out of upstream text before it is logged or relayed (invariant 5).

Theory of operation. A hostile or careless provider can echo what it was sent: "535
Authentication failed for AUTH PLAIN AHVzZXIAcHc=" puts the injected password, base64'd,
into a reply that the proxy would relay to the client and log. Two filters:

- `Scrubber.relay(line)` for upstream bytes on their way to the client: replaces the
  configured password in every form it crossed the wire in (plain, and base64 of the
  password alone (AUTH LOGIN) and of the AUTH PLAIN message), and any base64 token that
  decodes to something containing the password. Nothing else is touched (transparency);
  without injected credentials the filter is off and costs nothing.
- `scrub_log(text)` for every log line: the argument of an echoed `AUTH MECH payload`,
  and any base64 token that decodes to a SASL payload (NUL-separated PLAIN, XOAUTH2's
  ^A-separated `auth=Bearer`), become `[redacted]`; with a Scrubber, its password forms
  too. A log line is for people; losing a token in it costs nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

REDACTED = "[redacted]"
_REDACTED_B = REDACTED.encode()

#: an echoed AUTH command: keep the mechanism, drop the payload
_AUTH_ARG = re.compile(r"(?i)\b(AUTH\s+[A-Z0-9_-]+\s+)\S+")
#: a candidate base64 token (SASL payloads are at least a few bytes)
_B64 = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")
_B64_BYTES = re.compile(rb"[A-Za-z0-9+/]{8,}={0,2}")


def _decode(token: str | bytes) -> bytes | None:
    if len(token) % 4:
        return None
    try:
        return base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None


def _is_sasl_payload(raw: bytes) -> bool:
    return b"\0" in raw or (b"\x01" in raw and b"auth=" in raw.lower())


class Scrubber:
    """Knows the secrets one session injects upstream (none: a no-op)."""

    def __init__(self, passwords: Iterable[str | None] = (), user: str | None = None) -> None:
        self._secrets = [p.encode() for p in passwords if p]
        forms: set[bytes] = set()
        for pw in self._secrets:
            forms.add(pw)
            forms.add(base64.b64encode(pw))
            if user:
                u = user.encode()
                forms.add(base64.b64encode(b"\0" + u + b"\0" + pw))
                forms.add(base64.b64encode(u + b"\0" + u + b"\0" + pw))
        # Longest first: a shorter form inside a longer one must not leave its rest.
        self._forms = sorted(forms, key=len, reverse=True)

    @property
    def active(self) -> bool:
        return bool(self._secrets)

    def add_sasl_response(self, response: bytes) -> None:
        """Also hide an injected base64 SASL response (OAuth2: XOAUTH2/OAUTHBEARER) and
        the bearer token inside it, in every form: the base64 text, and any base64
        token decoding to something that contains the bearer token."""
        raw = _decode(response.strip())
        secrets = [response.strip()]
        if raw is not None:
            m = re.search(rb"auth=Bearer ([^\x01]+)", raw)
            if m:
                secrets.append(m.group(1))
        for secret in secrets:
            if secret and secret not in self._secrets:
                self._secrets.append(secret)
                self._forms.append(secret)
        self._forms.sort(key=len, reverse=True)

    def relay(self, data: bytes) -> bytes:
        """Upstream bytes for the client, with the injected password in no form."""
        if not self._secrets:
            return data
        for form in self._forms:
            if form in data:
                data = data.replace(form, _REDACTED_B)
        return _B64_BYTES.sub(self._relay_token, data)

    def _relay_token(self, m: re.Match[bytes]) -> bytes:
        raw = _decode(m.group(0))
        if raw is not None and any(pw in raw for pw in self._secrets):
            return _REDACTED_B
        return m.group(0)

    def log(self, text: str) -> str:
        """A log line with SASL payloads and this session's password forms redacted."""
        text = scrub_log(text)
        for form in self._forms:
            f = form.decode("utf-8", "replace")
            if f in text:
                text = text.replace(f, REDACTED)
        return text


def scrub_log(text: str) -> str:
    """A log line with echoed AUTH arguments and SASL payload tokens redacted."""
    if "AUTH" in text.upper():
        text = _AUTH_ARG.sub(lambda m: m.group(1) + REDACTED, text)
    return _B64.sub(_log_token, text)


def _log_token(m: re.Match[str]) -> str:
    raw = _decode(m.group(0))
    return REDACTED if raw is not None and _is_sasl_payload(raw) else m.group(0)
