"""The SASL initial responses against the published examples."""

from __future__ import annotations

import base64

import pytest

from accounts.sasl import initial_response, oauthbearer, xoauth2


def test_xoauth2_matches_googles_example() -> None:
    # developers.google.com/gmail/imap/xoauth2-protocol, "SASL XOAUTH2 initial client response"
    got = xoauth2("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
    assert got == (
        b"dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhk"
        b"SFJoZG1semRHRXVZMjl0Q2cBAQ=="
    )


def test_oauthbearer_is_rfc7628_section_3_1() -> None:
    got = base64.b64decode(
        oauthbearer("user@example.com", "vF9dft4qmTc2", "server.example.com", 143)
    )
    assert got == (
        b"n,a=user@example.com,\x01host=server.example.com\x01port=143"
        b"\x01auth=Bearer vF9dft4qmTc2\x01\x01"
    )
    assert initial_response("oauthbearer", "u@x", "t", "h", 1) == oauthbearer("u@x", "t", "h", 1)
    assert initial_response("xoauth2", "u@x", "t", "h", 1) == xoauth2("u@x", "t")


@pytest.mark.parametrize(("user", "token"), [("a\x01b@x", "t"), ("a,b@x", "t"), ("a@x", "t t")])
def test_separators_cannot_be_smuggled(user: str, token: str) -> None:
    with pytest.raises(ValueError):
        xoauth2(user, token)
