"""The small parsers under the relay: lines, commands, SASL account names, CAPA."""

from __future__ import annotations

import base64

import pytest

from proxy.buffer import LineBuffer, LineTooLong, is_crlf_line
from proxy.pop3.capa import CapaRewriter, capability_name
from proxy.pop3.commands import Kind, classify, parse_msg_number, uidl_pair
from proxy.pop3.sasl import SaslAccount


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


# --- LineBuffer -----------------------------------------------------------------------


def test_lines_come_out_one_at_a_time_with_their_ending() -> None:
    buf = LineBuffer()
    buf.feed(b"ab\r\ncd")
    assert buf.take_line(100) == b"ab\r\n"
    assert buf.take_line(100) is None
    buf.feed(b"\r\n")
    assert buf.take_line(100) == b"cd\r\n"
    assert len(buf) == 0


def test_an_overlong_line_is_detected_before_its_end_arrives() -> None:
    buf = LineBuffer()
    buf.feed(b"x" * 10)
    with pytest.raises(LineTooLong):
        buf.take_line(10)
    buf = LineBuffer()
    buf.feed(b"x" * 8 + b"\r\n")
    assert buf.take_line(10) == b"x" * 8 + b"\r\n"  # exactly the limit
    buf.feed(b"x" * 9 + b"\r\n")
    with pytest.raises(LineTooLong):
        buf.take_line(10)


def test_discard_line_drops_through_the_line_feed() -> None:
    buf = LineBuffer()
    buf.feed(b"junk")
    assert buf.discard_line() is False and len(buf) == 0
    buf.feed(b"more junk\r\nNOOP\r\n")
    assert buf.discard_line() is True
    assert buf.take_line(100) == b"NOOP\r\n"


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (b"NOOP\r\n", True),
        (b"\r\n", True),
        (b"NOOP\n", False),
        (b"NO\rOP\r\n", False),
        (b"NOOP\r\r\n", False),
        (b"NOOP", False),
    ],
)
def test_is_crlf_line(line: bytes, ok: bool) -> None:
    assert is_crlf_line(line) is ok


# --- commands -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind", "msg"),
    [
        (b"RETR 3\r\n", Kind.RETR, 3),
        (b"retr 3\r\n", Kind.RETR, 3),
        (b"RETR x\r\n", Kind.RETR, None),
        (b"RETR 0\r\n", Kind.RETR, None),
        (b"RETR 1 2\r\n", Kind.RETR, None),
        (b"LIST\r\n", Kind.LIST_ALL, None),
        (b"LIST 4\r\n", Kind.LIST_ONE, 4),
        (b"UIDL\r\n", Kind.UIDL_ALL, None),
        (b"UIDL 4\r\n", Kind.UIDL_ONE, 4),
        (b"TOP 1 10\r\n", Kind.TOP, 1),
        (b"TOP\t1 10\r\n", Kind.TOP, 1),
        (b" retr  2\r\n", Kind.RETR, 2),
        (b"CAPA\r\n", Kind.CAPA, None),
        (b"STLS\r\n", Kind.STLS, None),
        (b"AUTH\r\n", Kind.MULTI, None),
        (b"AUTH PLAIN\r\n", Kind.AUTH, None),
        (b"QUIT\r\n", Kind.QUIT, None),
        (b"XTND XMIT\r\n", Kind.SINGLE, None),
        (b"\r\n", Kind.SINGLE, None),
    ],
)
def test_classify(line: bytes, kind: Kind, msg: int | None) -> None:
    cmd = classify(line)
    assert (cmd.kind, cmd.msg, cmd.line) == (kind, msg, line)


def test_account_names_from_user_and_apop() -> None:
    assert classify(b"USER alice@example.org\r\n").account == "alice@example.org"
    assert classify(b"USER\r\n").account is None
    assert classify(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n").account == "mrose"
    assert classify(b"USER j\xc3\xbcrgen\r\n").account == "j\u00fcrgen"


def test_msg_numbers() -> None:
    assert parse_msg_number(b"12") == 12
    for bad in (b"0", b"-1", b"1.0", b"", b"\xd9\xa3", b"99999999999"):
        assert parse_msg_number(bad) is None


def test_uidl_pairs() -> None:
    assert uidl_pair(b"1 whqtswO00WBw418f9t5JxYwZ\r\n") == (1, "whqtswO00WBw418f9t5JxYwZ")
    assert uidl_pair(b" 2 QhdPYR:00WBw1Ph7x7\r\n") == (2, "QhdPYR:00WBw1Ph7x7")
    assert uidl_pair(b"1 " + b"x" * 71 + b"\r\n") is None  # RFC 1939: at most 70
    assert uidl_pair(b"1\r\n") is None
    assert uidl_pair(b"one two\r\n") is None


# --- SASL account names ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mechanism", "initial", "lines", "account"),
    [
        ("PLAIN", b64(b"\0alice\0pw"), [], "alice"),
        ("plain", b64(b"shared\0admin\0pw"), [], "shared"),
        ("PLAIN", None, [b64(b"\0bob\0pw") + b"\r\n"], "bob"),
        ("PLAIN", b"=", [b64(b"\0carol\0pw") + b"\r\n"], "carol"),
        ("LOGIN", None, [b64(b"dave") + b"\r\n", b64(b"pw") + b"\r\n"], "dave"),
        ("LOGIN", b64(b"erin"), [b64(b"pw") + b"\r\n"], "erin"),
        ("CRAM-MD5", None, [b64(b"frank 0d353a9e5f4ee865d969efbfeb3d951d") + b"\r\n"], "frank"),
        ("PLAIN", None, [b"*\r\n"], None),
        ("PLAIN", b"not base64!", [], None),
        ("PLAIN", b64(b"no separators"), [], None),
        ("XOAUTH2", b64(b"user=gina\x01auth=Bearer x\x01\x01"), [], None),
    ],
)
def test_sasl_account(
    mechanism: str, initial: bytes | None, lines: list[bytes], account: str | None
) -> None:
    sasl = SaslAccount(mechanism, initial)
    for line in lines:
        sasl.client_line(line)
    assert sasl.account == account


def test_sasl_keeps_no_secret() -> None:
    sasl = SaslAccount("PLAIN", b64(b"\0alice\0hunter2"))
    assert "hunter2" not in repr(vars(sasl))
    login = SaslAccount("LOGIN", None)
    login.client_line(b64(b"alice") + b"\r\n")
    login.client_line(b64(b"hunter2") + b"\r\n")
    assert login.account == "alice" and "hunter2" not in repr(vars(login))


# --- CAPA -----------------------------------------------------------------------------


def test_capability_name() -> None:
    assert capability_name(b"SASL PLAIN LOGIN\r\n") == b"SASL"
    assert capability_name(b"stls\r\n") == b"STLS"
    assert capability_name(b"..odd\r\n") == b".ODD"
    assert capability_name(b"\r\n") == b""


@pytest.mark.parametrize("offer", [True, False])
def test_capa_rewriter_across_chunks(offer: bool) -> None:
    wire = b"TOP\r\nST" + b"LS\r\nUSER\r\nstls extra\r\nSASL PLAIN\r\n"
    rw = CapaRewriter(offer_stls=offer, line_limit=512)
    out = rw.feed(wire[:7]) + rw.feed(wire[7:]) + rw.finish()
    assert out == b"TOP\r\nUSER\r\nSASL PLAIN\r\n" + (b"STLS\r\n" if offer else b"")


def test_capa_rewriter_refuses_an_endless_line() -> None:
    rw = CapaRewriter(offer_stls=False, line_limit=512)
    with pytest.raises(LineTooLong):
        rw.feed(b"X" * 600)
