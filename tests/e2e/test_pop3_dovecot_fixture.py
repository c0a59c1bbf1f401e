"""The Dovecot fixture and the POP3 client helpers, checked against each other directly.

These are the ground truth the POP3 proxy e2e tests build on: if one of them fails, the
fixture or the client helper is broken, not the proxy.
"""

from __future__ import annotations

import poplib
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from fixtures.dovecot import DovecotServer, served_form, start_dovecot
from fixtures.pop3_clients import run_curl, run_fetchmail, run_mpop, strip_fetchmail_received

pytestmark = pytest.mark.e2e

# Stuffed lines, an empty line, 8-bit text, a bare CR, no final line end.
TRICKY = (
    b"From: a@example.org\r\nTo: alice@example.org\r\nSubject: caf\xc3\xa9\r\n\r\n"
    b".starts with a dot\r\n..two\r\n.\r\nbare\rCR\r\nlast line without end"
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(ca: trustme.CA) -> Iterator[DovecotServer]:
    with start_dovecot(tls_ca=ca, users={"alice": "secret", "bob": "hunter2"}) as d:
        yield d


def context(server: DovecotServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.ca_file))


def retr(pop: poplib.POP3, n: int) -> bytes:
    _, lines, _ = pop.retr(n)  # poplib unstuffs and strips line ends
    return b"".join(line + b"\r\n" for line in lines)


def test_served_form() -> None:
    assert served_form(b"a\nb") == b"a\r\nb\r\n"
    assert served_form(b"a\r\nb\r\n") == b"a\r\nb\r\n"
    assert served_form(b"a\rb\n") == b"a\rb\r\n"


def test_plain_pop3_serves_delivered_bytes(server: DovecotServer) -> None:
    expected = server.deliver("alice", TRICKY)
    assert expected.endswith(b"last line without end\r\n")
    pop = poplib.POP3(server.host, server.port, timeout=10)
    try:
        welcome = pop.getwelcome()
        assert welcome.startswith(b"+OK") and b"<" in welcome  # APOP timestamp (apop on)
        assert "STLS" in pop.capa()
        pop.user("alice")
        pop.pass_("secret")
        assert pop.stat()[0] == 1
        assert retr(pop, 1) == expected
        uid = pop.uidl(1).split()[2]
        assert uid and pop.uidl()[1] == [b"1 " + uid]
    finally:
        pop.quit()
    assert server.maildir_count("alice") == 1  # RETR does not delete


def test_wrong_password_is_refused(server: DovecotServer) -> None:
    pop = poplib.POP3(server.host, server.port, timeout=10)
    pop.user("alice")
    with pytest.raises(poplib.error_proto, match="AUTH"):
        pop.pass_("wrong")
    pop.quit()


def test_stls_and_implicit_tls_verify_against_the_ca(server: DovecotServer) -> None:
    expected = server.deliver("alice", b"Subject: tls\n\nhello\n")
    pop = poplib.POP3(server.host, server.port, timeout=10)
    pop.stls(context(server))
    assert pop.sock.version() in ("TLSv1.2", "TLSv1.3")
    pop.user("alice")
    pop.pass_("secret")
    assert retr(pop, 1) == expected
    pop.quit()
    pops = poplib.POP3_SSL(server.host, server.tls_port, context=context(server), timeout=10)
    assert pops.getwelcome().startswith(b"+OK")
    pops.user("alice")
    pops.pass_("secret")
    assert retr(pops, 1) == expected
    pops.quit()
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL(
            server.host, server.tls_port, context=ssl.create_default_context(), timeout=10
        )


def test_dele_then_quit_removes_the_message(server: DovecotServer) -> None:
    server.deliver("alice", b"Subject: 1\n\none\n")
    server.deliver("alice", b"Subject: 2\n\ntwo\n")
    assert server.maildir_count("alice") == 2
    pop = poplib.POP3(server.host, server.port, timeout=10)
    pop.user("alice")
    pop.pass_("secret")
    pop.dele(1)
    pop.quit()
    assert server.maildir_count("alice") == 1


def test_dele_without_quit_keeps_the_message(server: DovecotServer) -> None:
    # What the proxy relies on when it drops a client: no QUIT, no expunge.
    server.deliver("alice", b"Subject: 1\n\none\n")
    pop = poplib.POP3(server.host, server.port, timeout=10)
    pop.user("alice")
    pop.pass_("secret")
    pop.dele(1)
    pop.sock.close()
    pop.file.close()
    for _ in range(100):
        if "Disconnected" in server.log_text():
            break
        subprocess.run(["sleep", "0.05"], check=True)
    assert server.maildir_count("alice") == 1


def test_listens_on_loopback_only(server: DovecotServer) -> None:
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) not installed")
    assert server._process is not None
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    mine = [line for line in out.splitlines() if f"pid={server._process.pid}," in line]
    local = {line.split()[3] for line in mine}
    assert local == {f"127.0.0.1:{server.port}", f"127.0.0.1:{server.tls_port}"}


def test_without_tls_there_is_no_stls() -> None:
    with start_dovecot() as d:
        assert d.tls_port is None and d.ca_file is None
        pop = poplib.POP3(d.host, d.port, timeout=10)
        assert "STLS" not in pop.capa()
        pop.user("alice")
        pop.pass_("secret")
        pop.quit()
    assert d._process is None


# --- the client helpers against Dovecot directly --------------------------------------


def port_for(server: DovecotServer, tls: str) -> int:
    if tls == "implicit":
        assert server.tls_port is not None
        return server.tls_port
    return server.port


def lf(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
def test_mpop(server: DovecotServer, tmp_path: Path, tls: str) -> None:
    served = server.deliver("alice", TRICKY)
    common = dict(user="alice", password="secret", tls=tls, ca_file=server.ca_file)
    run = run_mpop(server.host, port_for(server, tls), workdir=tmp_path / "a", **common)
    assert run.check().messages == [lf(served)]
    assert server.maildir_count("alice") == 1  # keep
    run = run_mpop(server.host, port_for(server, tls), workdir=tmp_path / "b", keep=False, **common)
    assert run.check().messages == [lf(served)]
    assert server.maildir_count("alice") == 0
    assert b"secret" not in b" ".join(a.encode() for a in run.argv)
    assert (tmp_path / "b" / "mpoprc").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
def test_fetchmail(server: DovecotServer, tmp_path: Path, tls: str) -> None:
    served = server.deliver("alice", TRICKY)
    common = dict(user="alice", password="secret", tls=tls, ca_file=server.ca_file)
    run = run_fetchmail(server.host, port_for(server, tls), workdir=tmp_path / "a", **common)
    (got,) = run.check().messages
    assert got.startswith(b"Received: ")
    # fetchmail stores LF line ends and drops bare CRs.
    assert strip_fetchmail_received(got) == lf(served).replace(b"\r", b"")
    assert server.maildir_count("alice") == 1
    run = run_fetchmail(
        server.host, port_for(server, tls), workdir=tmp_path / "b", keep=False, **common
    )
    assert len(run.check().messages) == 1
    assert server.maildir_count("alice") == 0
    assert (tmp_path / "b" / "fetchmailrc").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
def test_curl(server: DovecotServer, tmp_path: Path, tls: str) -> None:
    served = server.deliver("alice", TRICKY)
    common = dict(user="alice", password="secret", tls=tls, ca_file=server.ca_file)
    port = port_for(server, tls)
    assert run_curl(server.host, port, workdir=tmp_path, **common).check().messages == [served]
    plain = run_curl(server.host, port, workdir=tmp_path, login_options="AUTH=PLAIN", **common)
    assert plain.check().messages == [served]
    listing = run_curl(server.host, port, workdir=tmp_path, message=None, **common).check()
    # LIST sizes are Dovecot's CRLF size without the final line end it adds: no exact match.
    assert re.fullmatch(rb"1 \d+\r\n", listing.stdout)
    run_curl(server.host, port, workdir=tmp_path, request="DELE", **common).check()
    assert server.maildir_count("alice") == 0


def test_tls_client_refuses_an_unknown_ca(server: DovecotServer, tmp_path: Path) -> None:
    server.deliver("alice", b"Subject: x\n\nx\n")
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    common = dict(user="alice", password="secret", tls="starttls", ca_file=stranger)
    assert run_curl(server.host, server.port, workdir=tmp_path / "c", **common).returncode != 0
    assert run_mpop(server.host, server.port, workdir=tmp_path / "m", **common).returncode != 0
    assert server.maildir_count("alice") == 1
