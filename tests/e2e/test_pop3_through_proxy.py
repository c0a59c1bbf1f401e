"""POP3 relay end to end: real clients -> mailtee -> real Dovecot, byte for byte.

Issue 4 acceptance: every RETR leaves an `.eml` equal to the served message and an
`.mpr` with the POP3 account, unique-id and message number; the client gets the
message unchanged; deleting after download works through the proxy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from fixtures.dovecot import DovecotServer, start_dovecot
from fixtures.pop3_clients import run_curl, run_mpop

pytestmark = pytest.mark.e2e

MESSAGE = (
    b"From: a@example.org\r\nTo: alice@example.org\r\nSubject: caf\xc3\xa9\r\n\r\n"
    b".starts with a dot\r\n..two\r\n.\r\nbare\rCR\r\nlast\r\n"
)


@pytest.fixture
def upstream(ca: trustme.CA) -> Iterator[DovecotServer]:
    with start_dovecot(tls_ca=ca) as d:
        yield d


def pop3_listener(up: DovecotServer, **fields: object) -> dict[str, object]:
    return {
        "name": "pop3",
        "protocol": "pop3",
        "client_tls": "starttls",
        "target_port": up.port,
        "target_tls": "starttls",
        "target_ca": str(up.ca_file),
        **fields,
    }


async def test_curl_through_the_proxy_archives_the_served_bytes(
    upstream: DovecotServer, make_proxy, ca_file: Path, tmp_path: Path
) -> None:
    served = upstream.deliver("alice", MESSAGE)
    proxy = await make_proxy([pop3_listener(upstream)])
    run = await trio.to_thread.run_sync(
        partial(
            run_curl,
            "127.0.0.1",
            proxy.port("pop3"),
            user="alice",
            password="secret",
            workdir=tmp_path / "curl",
            tls="starttls",
            ca_file=ca_file,
        )
    )
    assert run.check().messages == [served]
    (rep,) = await proxy.wait_reports(1)
    assert rep.eml == served
    assert rep["protocol"] == "pop3" and rep["direction"] == "incoming"
    assert rep["pop3"]["user"] == "alice" and rep["pop3"]["msg"] == 1
    assert rep["pop3"]["uidl"]
    assert rep["sha256"] == hashlib.sha256(served).hexdigest()
    assert rep["upstream"]["outcome"] == "delivered"
    assert rep["upstream"]["reply"].startswith("+OK")
    assert upstream.maildir_count("alice") == 1


async def test_mpop_no_keep_through_the_proxy(
    upstream: DovecotServer, make_proxy, ca_file: Path, tmp_path: Path
) -> None:
    served = [upstream.deliver("alice", MESSAGE), upstream.deliver("alice", b"Subject: 2\n\nx\n")]
    proxy = await make_proxy(
        [pop3_listener(upstream, target_tls="implicit", target_port=upstream.tls_port)]
    )
    run = await trio.to_thread.run_sync(
        partial(
            run_mpop,
            "127.0.0.1",
            proxy.port("pop3"),
            user="alice",
            password="secret",
            workdir=tmp_path / "mpop",
            tls="starttls",
            ca_file=ca_file,
            keep=False,
        )
    )
    assert sorted(run.check().messages) == sorted(m.replace(b"\r\n", b"\n") for m in served)
    reports = await proxy.wait_reports(2)
    assert sorted(r.eml for r in reports) == sorted(served)
    assert {r["pop3"]["msg"] for r in reports} == {1, 2}
    assert upstream.maildir_count("alice") == 0
