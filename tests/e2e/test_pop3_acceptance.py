"""Issue 4 acceptance: POP3 through mailtee against a real Dovecot, with real clients.

Every test drives the real service (`make_proxy`) between a real client (poplib, mpop,
fetchmail, curl, or a raw socket where the test needs byte-level control) and a real
Dovecot (plain, STLS, implicit TLS; trustme certificates), except the hostile-upstream
STLS test, which needs an upstream that misbehaves on purpose (a tiny Trio server).

What is asserted, and why it matters:
- the `.eml` equals the message exactly as Dovecot served it (`deliver()`'s return
  value, i.e. after dot-unstuffing), for ISO-2022-JP, Shift_JIS, dot-leading lines and a
  50 MB message; the `.mpr` has the size, SHA-256, `pop3` section (user, UIDL as Dovecot
  reports it, msg) and direction incoming (DESIGN "Report directory");
- the listener matrix: client_tls x target_tls, all nine combinations, and the TLS
  versions the `.mpr` records show which sides really were encrypted;
- fail closed: when the copy cannot be written the client never sees the end of the
  message, so a DELE-after-RETR client leaves the message on the server (invariant 1);
- a wrong password's `-ERR` is Dovecot's, verbatim, and nothing is archived;
- STLS command/response injection (CVE-2011-0411 class) is refused on both sides;
- leave-on-server: two downloads give two reports with the same account, UIDL, SHA-256;
- TOP is relayed but not archived.
"""

from __future__ import annotations

import hashlib
import poplib
import shutil
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from fixtures import mails
from fixtures.dovecot import DovecotServer, start_dovecot
from fixtures.pop3_clients import run_curl, run_fetchmail, run_mpop, strip_fetchmail_received

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
USER, PASSWORD = "alice", "secret"
TLS_MODES = ("none", "starttls", "implicit")
#: the three content cases of the issue, as Dovecot will store and serve them
CONTENT = {m.name: m.data for m in (mails.iso2022jp(), mails.shift_jis(), mails.dot_lines())}
MB = 1_000_000
BIG_SIZE = 50 * MB


@pytest.fixture(scope="module")
def shared_dovecot(ca: trustme.CA) -> Iterator[DovecotServer]:
    """One Dovecot for the module (stopping one takes a second): STLS on `port`,
    implicit TLS on `tls_port`, certificates from the session's `ca`."""
    with start_dovecot(tls_ca=ca) as d:
        yield d


@pytest.fixture
def upstream(shared_dovecot: DovecotServer) -> DovecotServer:
    """The shared Dovecot with alice's mailbox emptied (Dovecot resyncs its index)."""
    maildir = shared_dovecot.maildir(USER)
    for sub in ("new", "cur"):
        for path in (maildir / sub).iterdir():
            path.unlink()
    assert shared_dovecot.maildir_count(USER) == 0
    return shared_dovecot


def pop3_listener(
    up: DovecotServer, client_tls: str = "none", target_tls: str = "none"
) -> dict[str, object]:
    return {
        "name": "pop3",
        "protocol": "pop3",
        "client_tls": client_tls,
        "target_tls": target_tls,
        "target_port": up.tls_port if target_tls == "implicit" else up.port,
        "target_ca": str(up.ca_file),
    }


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _AnyTls:
    def __eq__(self, other: object) -> bool:
        return other in ("TLSv1.2", "TLSv1.3")

    def __repr__(self) -> str:
        return "<TLSv1.2 or TLSv1.3>"


ANY_TLS = _AnyTls()


def expected_tls(mode: str) -> object:
    """What an `.mpr` records for a side in this TLS mode (None = plaintext)."""
    return None if mode == "none" else ANY_TLS


# --- poplib (stdlib) and raw-socket clients, run in a worker thread ---------------------------


@dataclass
class PoplibRun:
    capa_plain: list[str] = field(default_factory=list)
    capa_tls: list[str] = field(default_factory=list)
    uidls: dict[int, str] = field(default_factory=dict)
    messages: dict[int, bytes] = field(default_factory=dict)
    tops: dict[int, bytes] = field(default_factory=dict)


def _lines(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)  # poplib unstuffs and strips CRLF


def poplib_session(
    port: int,
    *,
    client_tls: str,
    ca_file: Path | None,
    retr: list[int] | None = None,
    top: list[tuple[int, int]] = (),  # type: ignore[assignment]
) -> PoplibRun:
    """Log in as alice, CAPA (before and after STLS), UIDL, TOP and RETR; QUIT.

    `retr=None` retrieves every message listed by UIDL.
    """
    out = PoplibRun()
    ctx = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    if client_tls == "implicit":
        pop: poplib.POP3 = poplib.POP3_SSL(HOST, port, context=ctx, timeout=30)
    else:
        pop = poplib.POP3(HOST, port, timeout=30)
    try:
        out.capa_plain = list(pop.capa())
        if client_tls == "starttls":
            pop.stls(ctx)
            out.capa_tls = list(pop.capa())
        pop.user(USER)
        pop.pass_(PASSWORD)
        for line in pop.uidl()[1]:
            n, uid = line.decode().split()
            out.uidls[int(n)] = uid
        for n, lines in top:
            out.tops[n] = _lines(pop.top(n, lines)[1])
        for n in sorted(out.uidls) if retr is None else retr:
            out.messages[n] = _lines(pop.retr(n)[1])
        pop.quit()
    finally:
        pop.close()
    return out


def direct_uidls(up: DovecotServer) -> dict[int, str]:
    """Dovecot's own UIDL listing, asked directly (the reports must carry these)."""
    return poplib_session(up.port, client_tls="none", ca_file=None, retr=[]).uidls


class RawPop3:
    """A blocking line-level POP3 client for byte-exact assertions."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=15)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError(f"closed; partial {self.buf!r}")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def cmd(self, line: bytes) -> bytes:
        self.sock.sendall(line)
        return self.line()

    def close(self) -> None:
        self.sock.close()


def wrong_password_exchange(port: int) -> list[bytes]:
    """Greeting status, USER, PASS with a wrong password, RETR 1, QUIT: the replies."""
    pop = RawPop3(port)
    try:
        replies = [pop.line()[:3]]  # greetings differ (APOP timestamp); compare the status
        for line in (b"USER alice\r\n", b"PASS wrong\r\n", b"RETR 1\r\n", b"QUIT\r\n"):
            replies.append(pop.cmd(line))
        return replies
    finally:
        pop.close()


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(partial(fn, *args, **kwargs))


async def receive_until_eof(stream: trio.abc.Stream, limit: float = 10.0) -> bytes:
    """Everything the peer sends until it closes (fails the test if it never does)."""
    data = b""
    with trio.fail_after(limit):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # a reset counts as closed
                return data
            if not chunk:
                return data
            data += chunk


async def sessions_done(proxy: Any) -> None:
    """Wait until the proxy has closed every session (the client may return first).

    Once (1 run in ~10), a test ending while a session was still closing produced a
    ResourceWarning for an unclosed upstream socket of the proxy (cause not pinned
    down; reported to the lead). Waiting here keeps these tests about what they test.
    """
    with trio.fail_after(5):
        while any(proxy.service.active.values()):  # noqa: ASYNC110 - no event to wait on
            await trio.sleep(0.01)


def check_report(
    rep: dict[str, Any], served: bytes, *, msg: int, uidl: str, user: str = USER
) -> None:
    assert rep.eml == served  # type: ignore[attr-defined]
    assert rep["format"] == "mailtee-mpr" and rep["version"] == 1
    assert rep["protocol"] == "pop3" and rep["direction"] == "incoming"
    assert rep["listener"] == "pop3"
    assert rep["size"] == len(served)
    assert rep["sha256"] == sha(served)
    assert rep["pop3"] == {"user": user, "uidl": uidl, "msg": msg}
    assert rep["smtp"] is None
    assert rep["upstream"]["outcome"] == "delivered"
    assert rep["upstream"]["reply"].startswith("+OK")


# --- the listener matrix, with poplib ---------------------------------------------------------


@pytest.mark.parametrize("target_tls", TLS_MODES)
@pytest.mark.parametrize("client_tls", TLS_MODES)
async def test_poplib_listener_matrix_archives_japanese_and_dot_mail(
    upstream: DovecotServer, make_proxy, ca_file: Path, client_tls: str, target_tls: str
) -> None:
    served = {i + 1: upstream.deliver(USER, data) for i, data in enumerate(CONTENT.values())}
    uidls = direct_uidls(upstream)
    proxy = await make_proxy([pop3_listener(upstream, client_tls, target_tls)])

    run = await in_thread(
        poplib_session, proxy.port("pop3"), client_tls=client_tls, ca_file=ca_file
    )

    assert run.uidls == uidls  # UIDL relayed unchanged
    assert run.messages == served  # the client got every byte Dovecot served
    # STLS is offered exactly when the listener offers it, and never again after it.
    assert ("STLS" in run.capa_plain) == (client_tls == "starttls")
    assert "STLS" not in run.capa_tls
    reports = await proxy.wait_reports(3)
    assert len(reports) == 3
    for rep in reports:
        n = rep["pop3"]["msg"]
        check_report(rep, served[n], msg=n, uidl=uidls[n])
        assert rep["client"]["tls"] == expected_tls(client_tls)
        assert rep["target"]["tls"] == expected_tls(target_tls)
        assert (
            rep["target"]["port"] == pop3_listener(upstream, client_tls, target_tls)["target_port"]
        )
    assert upstream.maildir_count(USER) == 3
    await sessions_done(proxy)


# --- the other clients: at least one run of each tool -----------------------------------------


@pytest.mark.parametrize("keep", [True, False], ids=["keep", "nokeep"])
async def test_fetchmail_through_the_proxy(
    upstream: DovecotServer, make_proxy, ca_file: Path, tmp_path: Path, keep: bool
) -> None:
    served = [upstream.deliver(USER, data) for data in CONTENT.values()]
    uidls = direct_uidls(upstream)
    proxy = await make_proxy([pop3_listener(upstream, "starttls", "implicit")])

    run = await in_thread(
        run_fetchmail,
        HOST,
        proxy.port("pop3"),
        user=USER,
        password=PASSWORD,
        workdir=tmp_path / "fetchmail",
        tls="starttls",
        ca_file=ca_file,
        tls_name="localhost",
        keep=keep,
    )

    got = sorted(strip_fetchmail_received(m) for m in run.check().messages)
    assert got == sorted(m.replace(b"\r\n", b"\n") for m in served)
    reports = await proxy.wait_reports(3)
    assert len(reports) == 3
    for rep in reports:
        n = rep["pop3"]["msg"]
        check_report(rep, served[n - 1], msg=n, uidl=uidls[n])
    assert upstream.maildir_count(USER) == (3 if keep else 0)


@pytest.mark.parametrize("client_tls", ["none", "implicit"])
async def test_curl_plain_and_pop3s(
    upstream: DovecotServer, make_proxy, ca_file: Path, tmp_path: Path, client_tls: str
) -> None:
    served = upstream.deliver(USER, CONTENT["shift-jis"])
    uidls = direct_uidls(upstream)
    proxy = await make_proxy([pop3_listener(upstream, client_tls, "starttls")])

    run = await in_thread(
        run_curl,
        HOST,
        proxy.port("pop3"),
        user=USER,
        password=PASSWORD,
        workdir=tmp_path / "curl",
        tls=client_tls,
        ca_file=ca_file,
        login_options="AUTH=PLAIN",  # SASL through the relay, account from the PLAIN blob
    )

    assert run.check().messages == [served]
    (rep,) = await proxy.wait_reports(1)
    check_report(rep, served, msg=1, uidl=uidls[1])
    assert rep["client"]["tls"] == expected_tls(client_tls)


async def test_mpop_leave_on_server_twice_gives_two_equal_reports(
    upstream: DovecotServer, make_proxy, ca_file: Path, tmp_path: Path
) -> None:
    served = upstream.deliver(USER, CONTENT["dot-lines"])
    uidls = direct_uidls(upstream)
    proxy = await make_proxy([pop3_listener(upstream, "implicit", "none")])

    for i in (1, 2):
        run = await in_thread(
            run_mpop,
            HOST,
            proxy.port("pop3"),
            user=USER,
            password=PASSWORD,
            workdir=tmp_path / f"mpop{i}",
            tls="implicit",
            ca_file=ca_file,
            keep=True,
        )
        assert run.check().messages == [served.replace(b"\r\n", b"\n")]
        reports = await proxy.wait_reports(i)
        assert len(reports) == i

    first, second = reports
    for rep in reports:
        check_report(rep, served, msg=1, uidl=uidls[1])
    assert first["id"] != second["id"] and first.mpr_path != second.mpr_path
    key = ("user", "uidl")
    assert [first["pop3"][k] for k in key] == [second["pop3"][k] for k in key]
    assert first["sha256"] == second["sha256"] == sha(served)
    assert upstream.maildir_count(USER) == 1


# --- a 50 MB message --------------------------------------------------------------------------


def big_message(size: int) -> bytes:
    """`size` bytes of CRLF lines (about 80 bytes each, every 7th starting with a dot)."""
    head = b"From: big@example.org\r\nTo: alice@example.org\r\nSubject: 50 MB\r\n\r\n"
    block = b"".join(
        (b"." if i % 7 == 0 else b"") + b"%06d " % i + b"x" * 70 + b"\r\n" for i in range(1000)
    )
    body = block * ((size - len(head)) // len(block) + 1)
    cut = body.rfind(b"\r\n", 0, size - len(head) - 2) + 2
    msg = head + body[:cut]
    return msg + b"y" * (size - len(msg) - 2) + b"\r\n"


async def test_50mb_message_through_curl_and_tls_both_sides(
    upstream: DovecotServer, make_proxy, ca_file: Path, tmp_path: Path
) -> None:
    message = big_message(BIG_SIZE)
    served = upstream.deliver(USER, message)
    assert served == message and len(served) == BIG_SIZE
    uidls = direct_uidls(upstream)
    proxy = await make_proxy([pop3_listener(upstream, "starttls", "implicit")])

    run = await in_thread(
        run_curl,
        HOST,
        proxy.port("pop3"),
        user=USER,
        password=PASSWORD,
        workdir=tmp_path / "curl",
        tls="starttls",
        ca_file=ca_file,
        timeout=120,
    )

    (got,) = run.check().messages
    assert len(got) == BIG_SIZE and sha(got) == sha(served)  # no 50 MB diff on failure
    (rep,) = await proxy.wait_reports(1)
    assert rep["size"] == BIG_SIZE and rep["sha256"] == sha(served)
    assert rep.eml_path.stat().st_size == BIG_SIZE and sha(rep.eml) == sha(served)
    assert rep["pop3"] == {"user": USER, "uidl": uidls[1], "msg": 1}
    assert rep["direction"] == "incoming" and rep["protocol"] == "pop3"
    assert rep["upstream"]["outcome"] == "delivered"


# --- fail closed ------------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["mpop", "fetchmail"])
async def test_unwritable_report_dir_keeps_the_message_on_the_server(
    upstream: DovecotServer, make_proxy, ca_file: Path, tmp_path: Path, client: str
) -> None:
    upstream.deliver(USER, CONTENT["iso-2022-jp"])
    # mpop 1.4 spins on a plaintext EOF in the middle of a message until the test's
    # timeout (its bug, not the proxy's); over TLS it sees the truncation and exits.
    client_tls = "implicit" if client == "mpop" else "starttls"
    proxy = await make_proxy([pop3_listener(upstream, client_tls, "starttls")])
    # The report directory becomes unusable after the service started.
    shutil.rmtree(proxy.reports_dir)
    proxy.reports_dir.write_bytes(b"not a directory\n")

    runner = run_mpop if client == "mpop" else run_fetchmail
    run = await in_thread(
        runner,
        HOST,
        proxy.port("pop3"),
        user=USER,
        password=PASSWORD,
        workdir=tmp_path / client,
        tls=client_tls,
        ca_file=ca_file,
        keep=False,  # would DELE after a complete RETR
        timeout=20,
    )

    assert run.returncode != 0, run.stderr
    assert upstream.maildir_count(USER) == 1  # never DELEd: the client never saw the end
    if client == "mpop":
        assert run.messages == []  # mpop stores a message only once it has all of it
    # (fetchmail streams the body into its MDA as it arrives, so the test MDA's file
    # has the bytes; fetchmail itself reports the failure and does not DELE.)
    assert proxy.reports_dir.read_bytes() == b"not a directory\n"
    assert proxy.service.stats.archive_failures == 1


# --- wrong password ---------------------------------------------------------------------------


@pytest.fixture
def own_dovecot(ca: trustme.CA) -> Iterator[DovecotServer]:
    """A Dovecot of the test's own: failed logins raise Dovecot's auth penalty for the
    client address, which would slow every later test on a shared server."""
    with start_dovecot(tls_ca=ca) as d:
        yield d


async def test_wrong_password_err_is_the_upstreams_verbatim(
    own_dovecot: DovecotServer, make_proxy
) -> None:
    upstream = own_dovecot
    upstream.deliver(USER, CONTENT["dot-lines"])
    proxy = await make_proxy([pop3_listener(upstream, "none", "implicit")])

    results: dict[str, list[bytes]] = {}

    async def exchange(name: str, port: int) -> None:
        results[name] = await in_thread(wrong_password_exchange, port)

    async with trio.open_nursery() as n:  # Dovecot delays failed logins; wait once
        n.start_soon(exchange, "direct", upstream.port)
        n.start_soon(exchange, "proxied", proxy.port("pop3"))

    direct, proxied = results["direct"], results["proxied"]
    assert proxied[2].startswith(b"-ERR") and b"[AUTH]" in proxied[2]
    assert proxied == direct  # every reply, including PASS's -ERR, byte for byte
    assert proxied[3].startswith(b"-ERR")  # RETR without login
    assert proxy.report_files() == []  # nothing archived, no work-in-progress files


# --- TOP --------------------------------------------------------------------------------------


async def test_partial_top_is_relayed_but_not_archived_and_a_whole_one_is(
    upstream: DovecotServer, make_proxy, ca_file: Path
) -> None:
    served = [upstream.deliver(USER, data) for data in CONTENT.values()]
    uidls = direct_uidls(upstream)
    proxy = await make_proxy([pop3_listener(upstream, "starttls", "starttls")])

    run = await in_thread(
        poplib_session,
        proxy.port("pop3"),
        client_tls="starttls",
        ca_file=ca_file,
        top=[(1, 0), (3, 4), (2, 1000)],
        retr=[],
    )

    header_end = served[0].index(b"\r\n\r\n") + 4
    assert run.tops[1] == served[0][:header_end]
    assert run.tops[3].startswith(served[2][: served[2].index(b"\r\n\r\n") + 4])
    assert run.tops[3] != served[2]
    assert run.tops[2] == served[1]  # more lines than the body has: the whole message
    # Only the TOP that returned the whole message is archived (issue 10 item 1).
    (rep,) = await proxy.wait_reports(1)
    check_report(rep, served[1], msg=2, uidl=uidls[2])

    # RETR archives as before.
    run = await in_thread(
        poplib_session, proxy.port("pop3"), client_tls="starttls", ca_file=ca_file, retr=[1]
    )
    assert run.messages == {1: served[0]}
    reports = await proxy.wait_reports(2)
    assert sorted(r["pop3"]["msg"] for r in reports) == [1, 2]
    await sessions_done(proxy)


# --- STLS injection (CVE-2011-0411 class) -----------------------------------------------------


class FakeUpstream:
    """A plaintext POP3 'server' that records every byte it gets.

    It answers every line with +OK, except STLS, to which it sends `stls_reply` (parts
    written separately, 0.2 s apart) and then only listens: a hostile provider that
    tries to slip plaintext responses in after agreeing to TLS.
    """

    def __init__(self, stls_reply: list[bytes] | None = None) -> None:
        self.stls_reply = stls_reply or [b"+OK Begin TLS negotiation\r\n"]
        self.received = b""
        self.after_stls = b""
        self.port = 0

    async def handler(self, stream: trio.SocketStream) -> None:
        try:
            await stream.send_all(b"+OK fake POP3 ready\r\n")
            buf = b""
            stls = False
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                self.received += data
                if stls:
                    self.after_stls += data
                    continue
                buf += data
                while b"\r\n" in buf and not stls:
                    line, _, buf = buf.partition(b"\r\n")
                    if line.upper() == b"STLS":
                        stls = True
                        self.after_stls += buf
                        for i, part in enumerate(self.stls_reply):
                            if i:
                                await trio.sleep(0.2)
                            await stream.send_all(part)
                    else:
                        await stream.send_all(b"+OK\r\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def start(self, nursery: trio.Nursery) -> FakeUpstream:
        listeners = await nursery.start(partial(trio.serve_tcp, self.handler, 0, host=HOST))
        self.port = listeners[0].socket.getsockname()[1]
        return self


def fake_listener(fake: FakeUpstream, client_tls: str, target_tls: str) -> dict[str, object]:
    return {
        "name": "pop3",
        "protocol": "pop3",
        "client_tls": client_tls,
        "target_tls": target_tls,
        "target_port": fake.port,
    }


@pytest.mark.parametrize("split", [False, True], ids=["same-write", "before-handshake"])
async def test_client_plaintext_after_stls_is_refused(
    make_proxy, nursery: trio.Nursery, split: bool
) -> None:
    fake = await FakeUpstream().start(nursery)
    proxy = await make_proxy([fake_listener(fake, "starttls", "none")])

    stream = await trio.open_tcp_stream(HOST, proxy.port("pop3"))
    async with stream:
        greeting = await stream.receive_some(512)
        assert greeting == b"+OK fake POP3 ready\r\n"
        if split:
            # STLS alone, then plaintext instead of a TLS ClientHello.
            await stream.send_all(b"STLS\r\n")
            assert await stream.receive_some(512) == b"+OK Begin TLS negotiation\r\n"
            await stream.send_all(b"USER x\r\n")
            rest = await receive_until_eof(stream)
            assert not rest.startswith(b"+") and not rest.startswith(b"-")  # no POP3 answer
        else:
            await stream.send_all(b"STLS\r\nUSER x\r\n")
            rest = await receive_until_eof(stream)
            assert rest == b""  # dropped: no +OK to STLS, no TLS handshake
    await trio.sleep(0.1)
    assert b"USER" not in fake.received  # the injected command went nowhere
    assert b"STLS" not in fake.received  # the proxy answers STLS itself
    assert proxy.report_files() == []


@pytest.mark.parametrize("split", [False, True], ids=["same-write", "before-handshake"])
async def test_upstream_plaintext_after_stls_is_not_honoured(
    make_proxy, nursery: trio.Nursery, split: bool
) -> None:
    injected = b"+OK injected\r\n"
    ok = b"+OK Begin TLS negotiation\r\n"
    fake = await FakeUpstream([ok, injected] if split else [ok + injected]).start(nursery)
    proxy = await make_proxy([fake_listener(fake, "none", "starttls")])

    stream = await trio.open_tcp_stream(HOST, proxy.port("pop3"))
    async with stream:
        got = await receive_until_eof(stream)
    # The client never sees the upstream's greeting (held until TLS is up), let alone the
    # injected line: it gets exactly one -ERR from the proxy and the connection ends.
    assert b"injected" not in got and b"fake" not in got
    assert got.startswith(b"-ERR [SYS/TEMP]") and got.count(b"\r\n") == 1
    await trio.sleep(0.1)
    assert fake.received.startswith(b"STLS\r\n")
    if split:
        # The proxy did start TLS (a ClientHello followed STLS); the plaintext the
        # upstream sent instead of a ServerHello broke the handshake.
        assert fake.after_stls[:1] == b"\x16"
    else:
        assert fake.after_stls == b""  # no handshake at all: dropped on sight
    assert proxy.report_files() == []
