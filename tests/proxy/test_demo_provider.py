"""The built-in demo provider, driven by the standard library's smtplib and poplib."""

from __future__ import annotations

import poplib
import smtplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.demo_provider import DemoProvider, demo_mail_dir, mailbox_name

# 8-bit UTF-8, a line starting with a dot, a lone "." line and no trailing blank line.
MESSAGE = (
    b"From: Bob <bob@example.net>\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: =?UTF-8?B?44GT44KT44Gr44Gh44Gv?=\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"caf\xc3\xa9 \xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf\r\n"
    b".leading dot\r\n"
    b".\r\n"
    b"..two dots\r\n"
    b"last line\r\n"
)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[DemoProvider]:
    p = DemoProvider(tmp_path / "mail", smtp_port=0, pop3_port=0)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def send(p: DemoProvider, rcpts: list[str], data: bytes = MESSAGE, **kw: object) -> None:
    with smtplib.SMTP(p.host, p.smtp_port, timeout=10) as s:
        s.sendmail("bob@example.net", rcpts, data, **kw)  # type: ignore[arg-type]


def pop(p: DemoProvider, user: str) -> poplib.POP3:
    c = poplib.POP3(p.host, p.pop3_port, timeout=10)
    try:
        c.user(user)
        c.pass_("any password at all")
    except BaseException:
        c.close()
        raise
    return c


def raw_session(p: DemoProvider, commands: bytes) -> bytes:
    """Send pipelined raw POP3 commands; return everything the server said."""
    with socket.create_connection((p.host, p.pop3_port), timeout=10) as s:
        s.sendall(commands)
        s.shutdown(socket.SHUT_WR)  # EOF after the commands: QUIT or a dropped client
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_smtp_stores_exact_bytes_once_per_recipient(provider: DemoProvider) -> None:
    send(provider, ["alice@example.com", "Carol@Example.org"])
    for box in ("alice@example.com", "carol@example.org"):
        files = list((provider.mail_dir / box / "new").iterdir())
        assert len(files) == 1
        assert files[0].read_bytes() == MESSAGE
        assert list((provider.mail_dir / box / "tmp").iterdir()) == []


def test_smtp_smtputf8_and_8bitmime(provider: DemoProvider) -> None:
    with smtplib.SMTP(provider.host, provider.smtp_port, timeout=10) as s:
        s.ehlo()
        assert s.has_extn("8bitmime") and s.has_extn("smtputf8")
        assert not s.has_extn("auth")
        s.sendmail(
            "bob@example.net",
            ["jürgen@example.de"],
            MESSAGE,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
    [f] = (provider.mail_dir / "jürgen@example.de" / "new").iterdir()
    assert f.read_bytes() == MESSAGE


def test_pop3_retr_returns_exact_bytes(provider: DemoProvider) -> None:
    send(provider, ["alice@example.com"])
    c = pop(provider, "alice@example.com")
    assert c.stat() == (1, len(MESSAGE))
    resp, lines, octets = c.retr(1)
    assert resp.startswith(b"+OK")
    # poplib removes the dot-stuffing and splits on CRLF
    assert b"\r\n".join(lines) + b"\r\n" == MESSAGE
    c.quit()


def test_pop3_wire_is_dot_stuffed_crlf(provider: DemoProvider) -> None:
    send(provider, ["alice@example.com"])
    out = raw_session(provider, b"USER alice@example.com\r\nPASS x\r\nRETR 1\r\nQUIT\r\n")
    stuffed = MESSAGE.replace(b"\r\n.", b"\r\n..")
    assert f"+OK {len(MESSAGE)} octets\r\n".encode() + stuffed + b".\r\n" in out
    assert out.endswith(b"+OK bye\r\n")


def test_pop3_list_uidl_top(provider: DemoProvider) -> None:
    send(provider, ["alice@example.com"])
    second = b"Subject: two\r\n\r\nb1\r\nb2\r\nb3\r\n"
    send(provider, ["alice@example.com"], second)
    c = pop(provider, "alice@example.com")
    _, listing, _ = c.list()
    assert listing == [b"1 %d" % len(MESSAGE), b"2 %d" % len(second)]
    assert c.list(2) == b"+OK 2 %d" % len(second)
    _, uidls, _ = c.uidl()
    ids = [line.split()[1] for line in uidls]
    assert len(set(ids)) == 2 and all(0 < len(i) <= 70 for i in ids)
    _, top, _ = c.top(2, 1)
    assert top == [b"Subject: two", b"", b"b1"]
    c.quit()


def test_pop3_dele_rset_and_quit_deletes(provider: DemoProvider) -> None:
    send(provider, ["alice@example.com"])
    send(provider, ["alice@example.com"])
    c = pop(provider, "alice@example.com")
    c.dele(1)
    assert c.stat()[0] == 1
    with pytest.raises(poplib.error_proto):
        c.retr(1)
    c.rset()
    assert c.stat()[0] == 2
    c.dele(2)
    c.quit()
    c = pop(provider, "alice@example.com")
    assert c.stat()[0] == 1
    c.quit()


def test_pop3_dropped_connection_deletes_nothing(provider: DemoProvider) -> None:
    send(provider, ["alice@example.com"])
    out = raw_session(provider, b"USER alice@example.com\r\nPASS x\r\nDELE 1\r\n")
    assert b"+OK message 1 deleted" in out
    c = pop(provider, "alice@example.com")
    assert c.stat()[0] == 1
    c.quit()


def test_pop3_capa_noop_and_errors(provider: DemoProvider) -> None:
    c = poplib.POP3(provider.host, provider.pop3_port, timeout=10)
    caps = c.capa()
    assert {"USER", "UIDL", "TOP"} <= caps.keys()
    with pytest.raises(poplib.error_proto):
        c.stat()  # not logged in yet
    c.user("nobody@example.com")
    c.pass_("x")
    assert c.stat() == (0, 0)  # unknown mailbox is empty
    assert c.noop().startswith(b"+OK")
    with pytest.raises(poplib.error_proto):
        c.retr(1)
    c.quit()


def test_pop3_unsafe_user_is_refused(provider: DemoProvider) -> None:
    out = raw_session(provider, b"USER ../etc\r\nPASS x\r\nQUIT\r\n")
    assert b"-ERR [AUTH]" in out


def test_pop3_mailbox_lock(provider: DemoProvider) -> None:
    c = pop(provider, "alice@example.com")
    second = poplib.POP3(provider.host, provider.pop3_port, timeout=10)
    second.user("alice@example.com")
    with pytest.raises(poplib.error_proto, match="IN-USE"):
        second.pass_("x")
    second.quit()
    c.quit()
    pop(provider, "alice@example.com").quit()


def test_stop_releases_ports_and_restart(tmp_path: Path) -> None:
    p = DemoProvider(tmp_path, smtp_port=0, pop3_port=0)
    p.start()
    ports = (p.smtp_port, p.pop3_port)
    p.stop()
    p.stop()  # idempotent
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with DemoProvider(tmp_path, smtp_port=ports[0], pop3_port=ports[1]) as again:
        send(again, ["x@example.com"])


def test_port_in_use_is_a_clear_oserror(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = DemoProvider(tmp_path, smtp_port=0, pop3_port=port)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            p.start()
        assert not p.running


def test_helpers() -> None:
    assert demo_mail_dir(Path("/s")) == Path("/s/demo")
    assert mailbox_name("<Alice@Example.COM>") == "alice@example.com"
    for bad in ("", ".hidden", "a/b", "a\\b", "a b"):
        assert mailbox_name(bad) is None
