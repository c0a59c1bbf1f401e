"""SASL initial responses for OAuth2 bearer tokens (sans-IO, pure functions).

XOAUTH2 (Google's and Microsoft's documented form):
    base64("user=" user "\\x01auth=Bearer " token "\\x01\\x01")
OAUTHBEARER (RFC 7628 section 3.1, with the GS2 header of RFC 5801):
    base64("n,a=" user "," "\\x01host=" host "\\x01port=" port
           "\\x01auth=Bearer " token "\\x01\\x01")
Both are sent as the SASL initial response; a failure is answered by the server with a
challenge carrying a JSON error, to which the client sends an empty response (RFC 7628
3.2.3) and then gets the final failure reply. Used by the relay's upstream logins
(proxy/oauth_session.py) and by mailbox pulls (archive/pull/); standard library only.
"""

from __future__ import annotations

import base64

MECHANISMS = {"xoauth2": b"XOAUTH2", "oauthbearer": b"OAUTHBEARER"}


def check(user: str, token: str) -> None:
    """Raise ValueError if `user` or `token` holds what SASL cannot carry."""
    # \x01 separates the fields and "," the GS2 header: neither may hide in the values.
    if any(c in user for c in "\x01,=\r\n") or any(c in token for c in "\x01\r\n "):
        raise ValueError("user name or token has characters SASL cannot carry")


def xoauth2(user: str, token: str) -> bytes:
    check(user, token)
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode())


def oauthbearer(user: str, token: str, host: str, port: int) -> bytes:
    check(user, token)
    raw = f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(raw.encode())


def initial_response(mechanism: str, user: str, token: str, host: str, port: int) -> bytes:
    """(mechanism name) -> the base64 initial response for it."""
    if mechanism == "oauthbearer":
        return oauthbearer(user, token, host, port)
    return xoauth2(user, token)
