"""POP3 TOP that returns the whole message is archived like RETR (issue 10 item 1).

fetchmail in its default configuration (no `keep`, no `fetchall`) downloads every
message with `TOP n 99999999` and then DELEs it. Before the fix that left no copy at
all. A TOP reply is a whole message when its body ends before the requested line count
or its size reaches the message's LIST size; the relay asks `LIST n` itself when the
session has not listed the message (docs/reliability.md, "POP3 TOP").
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from fixtures import mails
from fixtures.dovecot import DovecotServer, start_dovecot
from fixtures.pop3_clients import run_fetchmail, strip_fetchmail_received

pytestmark = pytest.mark.e2e

USER, PASSWORD = "alice", "secret"
CONTENT = [m.data for m in (mails.iso2022jp(), mails.shift_jis(), mails.dot_lines())]


@pytest.fixture
def upstream(ca: trustme.CA) -> Iterator[DovecotServer]:
    with start_dovecot(tls_ca=ca) as d:
        yield d


def listener(up: DovecotServer) -> dict[str, object]:
    return {
        "name": "pop3",
        "protocol": "pop3",
        "client_tls": "starttls",
        "target_tls": "starttls",
        "target_port": up.port,
        "target_ca": str(up.ca_file),
    }


@pytest.mark.parametrize("uidl", [False, True], ids=["default", "uidl"])
async def test_fetchmail_default_config_top_download_is_archived(
    upstream: DovecotServer, make_proxy, ca_file: Path, tmp_path: Path, uidl: bool
) -> None:
    """No keep, no fetchall (and, by default, no uidl either): fetchmail's defaults."""
    served = [upstream.deliver(USER, data) for data in CONTENT]
    proxy = await make_proxy([listener(upstream)])
    run = await trio.to_thread.run_sync(
        partial(
            run_fetchmail,
            "127.0.0.1",
            proxy.port("pop3"),
            user=USER,
            password=PASSWORD,
            workdir=tmp_path / "fetchmail",
            ca_file=ca_file,
            keep=False,
            fetchall=False,
            uidl=uidl,
        )
    )
    got = sorted(strip_fetchmail_received(m) for m in run.check().messages)
    assert got == sorted(m.replace(b"\r\n", b"\n") for m in served)
    assert b"TOP 1 99999999" in run.stdout + run.stderr  # the path under test, not RETR
    assert upstream.maildir_count(USER) == 0  # fetchmail deleted them at the source
    reports = await proxy.wait_reports(3)
    assert sorted(r.eml for r in reports) == sorted(served)
    for rep in reports:
        n = rep["pop3"]["msg"]
        assert rep.eml == served[n - 1]
        assert rep["sha256"] == hashlib.sha256(served[n - 1]).hexdigest()
        assert rep["pop3"]["user"] == USER and rep["pop3"]["uidl"]
        assert rep["upstream"]["outcome"] == "delivered"


class Wire:
    """A raw POP3 client (plaintext) for exchanges no ready-made client sends."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.f = self.sock.makefile("rwb")
        assert self.f.readline().startswith(b"+OK")

    def command(self, line: bytes, multi: bool = False) -> bytes:
        self.f.write(line + b"\r\n")
        self.f.flush()
        out = self.f.readline()
        if multi and out.startswith(b"+OK"):
            while (line := self.f.readline()) != b".\r\n":
                assert line, "connection closed inside a multi-line reply"
                out += line
        return out

    def close(self) -> None:
        self.f.close()
        self.sock.close()


def body_lines(message: bytes) -> int:
    return message.split(b"\r\n\r\n", 1)[1].count(b"\r\n")


async def test_top_with_exact_line_count_or_header_only_is_archived(
    upstream: DovecotServer, make_proxy
) -> None:
    """TOP n L with L = the body's line count returns the whole message too (the size
    decides); TOP of a partial body leaves no report; DELE is relayed regardless."""
    whole = upstream.deliver(USER, b"Subject: one\r\n\r\nline 1\r\n.dot line\r\nline 3\r\n")
    partial_msg = upstream.deliver(USER, b"Subject: two\r\n\r\n" + b"more\r\n" * 20)
    listing = {**listener(upstream), "client_tls": "none"}
    proxy = await make_proxy([listing])

    def session() -> tuple[bytes, bytes, bytes]:
        w = Wire(proxy.port("pop3"))
        assert w.command(b"USER alice").startswith(b"+OK")
        assert w.command(b"PASS secret").startswith(b"+OK")
        exact = w.command(b"TOP 1 %d" % body_lines(whole), multi=True)
        part = w.command(b"TOP 2 3", multi=True)
        dele = w.command(b"DELE 2")
        w.command(b"QUIT")
        w.close()
        return exact, part, dele

    exact, part, dele = await trio.to_thread.run_sync(session)
    assert exact.split(b"\r\n", 1)[1] == whole.replace(b"\r\n.", b"\r\n..")
    assert part.count(b"more\r\n") == 3
    assert dele.startswith(b"+OK")
    (rep,) = await proxy.wait_reports(1)
    assert rep.eml == whole and rep["pop3"]["msg"] == 1
    assert upstream.maildir_count(USER) == 1  # the partly seen one was deleted
    assert len(partial_msg) > 0
