"""EHLO capability rewriting: what the proxy owns, what passes unchanged."""

from __future__ import annotations

import pytest
from smtp_harness import EHLO_REPLY

from proxy.smtp.ehlo import Capabilities, rewrite_ehlo
from proxy.smtp.replies import Reply, ReplyReader


def parse(raw: bytes) -> Reply:
    reader = ReplyReader()
    reply = None
    for line in raw.splitlines(keepends=True):
        reply = reader.add_line(line.rstrip(b"\r\n"), line)
    assert reply is not None
    return reply


def keywords(raw: bytes) -> list[bytes]:
    return [ln.split()[0] if ln.split() else b"" for ln in parse(raw).lines[1:]]


def rewrite(raw: bytes = EHLO_REPLY, *, tls: bool = False, auth: bool = True, size: int = 10**9):
    return rewrite_ehlo(parse(raw), offer_starttls=tls, offer_auth=auth, max_size=size)


def test_passes_the_standard_extensions() -> None:
    out = rewrite()
    for kw in (b"PIPELINING", b"8BITMIME", b"SMTPUTF8", b"DSN", b"ENHANCEDSTATUSCODES"):
        assert kw in keywords(out)
    assert b"VRFY" in keywords(out) and b"ETRN" in keywords(out)  # unknown ones pass too
    assert out.startswith(b"250-smtp.example.net\r\n")


def test_starttls_removed_unless_the_listener_offers_it() -> None:
    assert b"STARTTLS" not in keywords(rewrite(tls=False))
    assert keywords(rewrite(tls=True)).count(b"STARTTLS") == 1
    # offered even when the provider does not offer it
    no_tls = b"250-mx\r\n250 PIPELINING\r\n"
    assert keywords(rewrite(no_tls, tls=True)) == [b"PIPELINING", b"STARTTLS"]


def test_auth_removed_when_not_offered() -> None:
    assert b"AUTH" in keywords(rewrite(auth=True))
    assert b"AUTH" not in keywords(rewrite(auth=False))
    old_style = b"250-mx\r\n250-AUTH=LOGIN PLAIN\r\n250-auth plain\r\n250 DSN\r\n"
    assert keywords(rewrite(old_style, auth=False)) == [b"DSN"]


def test_chunking_and_binarymime_always_removed() -> None:
    out = keywords(rewrite())
    assert b"CHUNKING" not in out and b"BINARYMIME" not in out
    lower = b"250-mx\r\n250-chunking\r\n250 binarymime\r\n"
    assert keywords(rewrite(lower)) == []


@pytest.mark.parametrize(
    ("line", "limit", "expected"),
    [
        (b"SIZE 10240000", 5_000_000, b"SIZE 5000000"),  # provider's larger: ours
        (b"SIZE 1000", 5_000_000, b"SIZE 1000"),  # provider's smaller: kept verbatim
        (b"SIZE 0", 5_000_000, b"SIZE 5000000"),  # 0 = no limit upstream
        (b"SIZE", 5_000_000, b"SIZE 5000000"),  # no value = no limit
        (b"SIZE 5000000", 5_000_000, b"SIZE 5000000"),
    ],
)
def test_size_lowered_to_our_limit(line: bytes, limit: int, expected: bytes) -> None:
    out = rewrite(b"250-mx\r\n250-" + line + b"\r\n250 DSN\r\n", size=limit)
    assert parse(out).lines == (b"mx", expected, b"DSN")


def test_size_not_added_when_absent() -> None:
    assert b"SIZE" not in keywords(rewrite(b"250-mx\r\n250 DSN\r\n", size=100))


def test_non_250_untouched() -> None:
    for raw in (b"502 5.5.2 Error: command not recognized\r\n", b"421-busy\r\n421 go away\r\n"):
        assert rewrite(raw, tls=True, auth=False) == raw


def test_single_line_250_gets_starttls_as_continuation() -> None:
    out = rewrite(b"250 mx.example\r\n", tls=True)
    assert out == b"250-mx.example\r\n250 STARTTLS\r\n"
    assert rewrite(b"250 mx.example\r\n") == b"250 mx.example\r\n"


def test_result_is_a_well_formed_reply_with_crlf() -> None:
    out = rewrite(EHLO_REPLY.replace(b"\r\n", b"\n"), tls=True, auth=False)
    reply = parse(out)
    assert reply.raw == out and out.count(b"\r\n") == len(reply.lines)
    assert out.endswith(b"250 STARTTLS\r\n")


def test_capabilities() -> None:
    caps = Capabilities.from_reply(parse(EHLO_REPLY))
    assert b"STARTTLS" in caps.keywords and b"PIPELINING" in caps.keywords
    assert caps.auth_mechanisms == frozenset({b"PLAIN", b"LOGIN"})
    old = Capabilities.from_reply(parse(b"250-mx\r\n250-AUTH=LOGIN\r\n250 auth cram-md5 plain\r\n"))
    assert old.auth_mechanisms == frozenset({b"LOGIN", b"CRAM-MD5", b"PLAIN"})
    assert Capabilities.from_reply(parse(b"250 mx\r\n")).keywords == frozenset()
