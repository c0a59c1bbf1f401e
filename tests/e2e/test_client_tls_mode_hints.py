"""A client set to the wrong security mode gets a log line that says so (issue 10 item 17).

Real clients (curl, swaks) against real listeners: SSL/TLS (implicit) spoken to a
STARTTLS port, and plaintext spoken to an SSL/TLS port. Nothing reaches the provider in
either case.
"""

from __future__ import annotations

import logging
import subprocess

import pytest
import trio

from fixtures.dovecot import start_dovecot
from proxy import tls_hints

pytestmark = pytest.mark.e2e


def _curl(url: str, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--user", "alice:secret", *extra, url],
        capture_output=True,
    )


def _lines(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


async def test_implicit_tls_to_a_starttls_port_is_named(make_proxy, caplog) -> None:
    caplog.set_level(logging.INFO)
    with start_dovecot() as dovecot:
        dovecot.deliver("alice", b"Subject: x\r\n\r\nbody\r\n")
        proxy = await make_proxy(
            [
                {
                    "name": "pop3",
                    "protocol": "pop3",
                    "client_tls": "starttls",
                    "target_port": dovecot.port,
                }
            ]  # fmt: skip
        )
        url = f"pop3s://127.0.0.1:{proxy.port('pop3')}/1"
        r = await trio.to_thread.run_sync(_curl, url, "--cacert", str(proxy.ca_file))
        assert r.returncode != 0
        await trio.sleep(0.1)
        (line,) = _lines(caplog, "client began a TLS handshake")
        assert "STARTTLS port" in line and "listener=pop3" in line
        assert proxy.reports() == []
        assert dovecot.maildir_count("alice") == 1


async def test_plaintext_to_an_implicit_tls_port_is_named(make_proxy, caplog) -> None:
    caplog.set_level(logging.INFO)
    with start_dovecot() as dovecot:
        proxy = await make_proxy(
            [{"name": "pop3s", "protocol": "pop3", "client_tls": "implicit",
              "target_port": dovecot.port}],
            connect_timeout=1.0,
        )  # fmt: skip
        port = proxy.port("pop3s")
        # curl waits for the banner (as every POP3 client does): mailtee waits for a
        # ClientHello that never comes.
        r = await trio.to_thread.run_sync(_curl, f"pop3://127.0.0.1:{port}/")
        assert r.returncode != 0
        # swaks-style clients that speak at once get the plaintext hint instead.
        with trio.socket.socket() as s:
            await s.connect(("127.0.0.1", port))
            await s.send(b"CAPA\r\n")
            with trio.move_on_after(5):
                await s.recv(100)
        await trio.sleep(0.1)
        failed = _lines(caplog, "client TLS handshake failed")
        assert any("sent no TLS handshake" in line for line in failed), failed
        assert any("spoke plaintext on this SSL/TLS port" in line for line in failed), failed


def test_hints_for_certificate_rejections() -> None:
    hint = tls_hints.handshake_hint("SSLV3_ALERT_BAD_CERTIFICATE", "starttls")
    assert "tls ca" in hint
    assert tls_hints.handshake_hint("timed out", "starttls") == ""
    assert tls_hints.looks_like_tls(b"\x16\x03\x01\x02\x00") and not tls_hints.looks_like_tls(
        b"USER alice\r\n"
    )
