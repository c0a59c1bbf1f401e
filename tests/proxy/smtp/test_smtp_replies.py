"""Upstream reply parsing (multi-line, malformed, hostile) and the proxy's own replies."""

from __future__ import annotations

import re

import pytest

from proxy.errors import RemoteProtocolError
from proxy.smtp import replies as R
from proxy.smtp.replies import MAX_REPLY_LINES, Reply, ReplyReader, build_reply, parse_reply_line


def read(raw: bytes) -> list[Reply]:
    reader = ReplyReader()
    out = []
    for line in raw.splitlines(keepends=True):
        reply = reader.add_line(line.rstrip(b"\r\n"), line)
        if reply is not None:
            out.append(reply)
    return out


def test_single_line() -> None:
    (reply,) = read(b"250 2.1.0 Ok\r\n")
    assert reply.code == 250 and reply.lines == (b"2.1.0 Ok",)
    assert reply.raw == b"250 2.1.0 Ok\r\n"
    assert reply.positive and reply.text == "250 2.1.0 Ok"


def test_multi_line_keeps_raw_bytes() -> None:
    raw = b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"
    (reply,) = read(raw)
    assert reply.code == 250
    assert reply.lines == (b"mx.example", b"PIPELINING", b"SIZE 1000", b"8BITMIME")
    assert reply.raw == raw


def test_several_replies_in_a_row() -> None:
    replies = read(b"250 ok\r\n550-no\r\n550 such user\r\n354 go\r\n")
    assert [r.code for r in replies] == [250, 550, 354]
    assert replies[1].lines == (b"no", b"such user")
    assert not replies[1].positive and replies[2].positive


def test_bare_code_and_lf_only() -> None:
    (a,) = read(b"250\r\n")
    assert a.code == 250 and a.lines == (b"",) and a.text == "250"
    (b,) = read(b"221 bye\n")
    assert b.raw == b"221 bye\n"


def test_text_decodes_leniently() -> None:
    (reply,) = read(b"550 caf\xe9 \xff\r\n")
    assert reply.text.startswith("550 caf")


@pytest.mark.parametrize(
    "line",
    [b"", b"25", b"abc ok", b"250x ok", b"650 ok", b"150 ok", b"025 ok", b"25a ok", b" 250 ok"],
)
def test_malformed_lines(line: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_reply_line(line)
    with pytest.raises(RemoteProtocolError):
        ReplyReader().add_line(line, line + b"\r\n")


def test_parse_reply_line() -> None:
    assert parse_reply_line(b"250-PIPELINING") == (250, False, b"PIPELINING")
    assert parse_reply_line(b"250 ok") == (250, True, b"ok")
    assert parse_reply_line(b"421") == (421, True, b"")


def test_code_change_inside_multi_line() -> None:
    reader = ReplyReader()
    assert reader.add_line(b"250-a", b"250-a\r\n") is None
    with pytest.raises(RemoteProtocolError):
        reader.add_line(b"550 b", b"550 b\r\n")


def test_overlong_multi_line_reply() -> None:
    reader = ReplyReader()
    with pytest.raises(RemoteProtocolError):
        for _ in range(MAX_REPLY_LINES + 1):
            reader.add_line(b"250-x", b"250-x\r\n")


def test_reader_resets_after_each_reply() -> None:
    reader = ReplyReader()
    reader.add_line(b"250-a", b"250-a\r\n")
    assert reader.add_line(b"250 b", b"250 b\r\n") is not None
    reply = reader.add_line(b"550 c", b"550 c\r\n")  # a new code is fine now
    assert reply is not None and reply.code == 550 and reply.raw == b"550 c\r\n"


def test_build_reply() -> None:
    assert build_reply(250, [b"only"]) == b"250 only\r\n"
    assert build_reply(250, [b"a", b"b", b"c"]) == b"250-a\r\n250-b\r\n250 c\r\n"
    (reply,) = read(build_reply(250, [b"a", b"SIZE 5"]))
    assert reply.lines == (b"a", b"SIZE 5")


def test_own_replies_are_well_formed() -> None:
    """Every constant parses as an SMTP reply with an enhanced status code (RFC 3463)."""
    constants = [v for k, v in vars(R).items() if k.isupper() and isinstance(v, bytes)]
    assert len(constants) > 10
    for raw in constants:
        filled = raw.replace(b"{host}", b"mx.test").replace(b"{kind}", b"LF")
        assert filled.endswith(b"\r\n") and filled.count(b"\r\n") == 1
        code, last, text = parse_reply_line(filled[:-2])
        assert last
        status = re.match(rb"(\d)\.\d{1,3}\.\d{1,3} ", text)
        assert status is not None and int(status.group(1)) == code // 100, filled
