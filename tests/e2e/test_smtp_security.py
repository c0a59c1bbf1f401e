"""SMTP relay end to end: the invariants an attacker or a broken disk tests.

Issue 3 acceptance: fail closed when the report directory is unusable (451 4.3.0, nothing
delivered; "pass" delivers and logs an error); SMTP smuggling refused (550 5.5.2, no
message at all upstream, nothing archived); STARTTLS injection refused on both sides;
clients outside allow_clients refused; bad provider certificates refused unless
`target_verify = false`; injected credentials used upstream and never leaked to logs,
reports or command output; the client's own AUTH relayed when nothing is injected.
"""

from __future__ import annotations

import base64
import gc
import logging
import shutil
import sys

import pytest
import trio

from fixtures import mails
from fixtures.smtp_clients import (
    client_context,
    msmtp,
    require_swaks_tls,
    smtp_wire,
    smtplib_session,
    swaks,
)
from fixtures.smtp_upstream import INJECTED_REPLY, hostile_starttls_upstream

pytestmark = pytest.mark.e2e

SECRET = "S3cret-Pr0vider-Pw-7f3a"  # the injected password; must never show up anywhere
RELAY_USER = "relay-user"


def listener(up, **fields):
    return {"name": "smtp", "target_port": up.port, **fields}


def secret_forms(password: str, user: str = RELAY_USER) -> list[bytes]:
    """The password as it could leak: plain, and as AUTH PLAIN / LOGIN put it on the wire."""
    pw = password.encode()
    return [
        pw,
        base64.b64encode(pw),
        base64.b64encode(b"\0" + user.encode() + b"\0" + pw),
        base64.b64encode(user.encode() + b"\0" + user.encode() + b"\0" + pw),
    ]


def assert_no_secret(blob: bytes | str, where: str, password: str = SECRET) -> None:
    data = blob.encode("utf-8", "replace") if isinstance(blob, str) else blob
    for form in secret_forms(password):
        assert form not in data, f"password ({form!r}) found in {where}"


def mailtee_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("mailtee")]


# --- fail closed ---------------------------------------------------------------------


def break_reports_dir(proxy) -> None:
    """Replace state_dir/reports with a regular file: every write there fails."""
    shutil.rmtree(proxy.reports_dir)
    proxy.reports_dir.write_bytes(b"not a directory\n")


async def test_unusable_report_dir_rejects_with_451(smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([listener(up)])
    break_reports_dir(proxy)
    res = await smtplib_session(proxy.port(), [mails.plain()])
    tx = res.transactions[0]
    assert tx.data is not None, res
    assert tx.data[0] == 451 and tx.data[1].startswith(b"4.3.0"), tx.data
    await trio.sleep(0.2)  # give a wrongly relayed final dot time to arrive
    assert up.transactions == []  # the upstream never got a complete message


async def test_unusable_report_dir_with_pass_delivers_and_logs(smtp_upstream, make_proxy, caplog):
    caplog.set_level(logging.DEBUG, logger="mailtee")
    up = smtp_upstream()
    proxy = await make_proxy([listener(up)], on_archive_failure="pass")
    break_reports_dir(proxy)
    mail = mails.utf8_8bit()
    res = await smtplib_session(proxy.port(), [mail])
    assert res.transactions[0].delivered, res
    assert [t.content for t in up.messages] == [mail.data]
    errors = [r for r in mailtee_records(caplog) if r.levelno >= logging.ERROR]
    assert errors, [r.getMessage() for r in mailtee_records(caplog)]


# --- SMTP smuggling ------------------------------------------------------------------


async def smuggle(port: int, eod: bytes) -> bytes:
    """One transaction whose DATA hides a second one behind `eod`; returns the replies."""
    async with smtp_wire(port) as w:
        assert (await w.read_reply())[0] == 220
        assert (await w.command(b"EHLO attacker.example"))[0] == 250
        assert (await w.command(b"MAIL FROM:<attacker@example.org>"))[0] == 250
        assert (await w.command(b"RCPT TO:<bob@example.net>"))[0] == 250
        assert (await w.command(b"DATA"))[0] == 354
        await w.send(mails.smuggling_data(eod))
        # the verdict, then whatever a fooled relay would answer to "smuggled" commands
        reply = await w.read_reply(max_wait=10)
        with trio.move_on_after(0.5):
            while reply is not None:
                reply = await w.read_reply()
        with trio.move_on_after(2):
            try:
                await w.send(b"QUIT\r\n")
                await w.read_until_eof(2)
            except trio.BrokenResourceError:
                pass
        return bytes(w.transcript)


@pytest.mark.parametrize("eod", list(mails.SMUGGLING_EODS.values()), ids=list(mails.SMUGGLING_EODS))
async def test_smtp_smuggling_refused(eod, smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([listener(up)])
    transcript = await smuggle(proxy.port(), eod)
    assert b"\r\n550 5.5.2 " in transcript, transcript
    assert b"\r\n250 2.0.0" not in transcript  # neither message acknowledged
    await trio.sleep(0.2)
    assert up.transactions == []  # no message at all reached the provider ...
    assert mails.SMUGGLED_RCPT not in up.rcpt_attempts  # ... nor the smuggled envelope
    assert proxy.report_files() == []  # and nothing was archived


@pytest.mark.parametrize("eod", list(mails.NUL_EODS.values()), ids=list(mails.NUL_EODS))
async def test_nul_near_dot_is_not_an_end_of_data(eod, smtp_upstream, make_proxy):
    """No bare CR/LF: refusing is fine, delivering is fine -- as ONE message, archived."""
    up = smtp_upstream()
    proxy = await make_proxy([listener(up)])
    await smuggle(proxy.port(), eod)
    await trio.sleep(0.2)
    assert mails.SMUGGLED_RCPT not in up.rcpt_attempts
    assert len(up.transactions) <= 1
    if up.messages:
        (rep,) = await proxy.wait_reports(1)
        assert rep.eml == up.messages[0].content
        assert mails.SMUGGLED_SUBJECT in rep.eml  # the "second message" is just content
        assert rep["smtp"]["rcpt_to"] == ["bob@example.net"]


# --- STARTTLS injection (CVE-2011-0411 class) -----------------------------------------


@pytest.mark.parametrize(
    "injected", [b"RSET\r\n", b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@example.net>\r\n"]
)
async def test_client_starttls_with_pipelined_plaintext_is_dropped(
    injected, smtp_upstream, make_proxy, ca_file
):
    up = smtp_upstream()
    proxy = await make_proxy([listener(up, client_tls="starttls")])
    async with smtp_wire(proxy.port()) as w:
        assert (await w.read_reply())[0] == 220
        code, ehlo = await w.command(b"EHLO client.example")
        assert code == 250 and b"STARTTLS" in ehlo
        await w.send(b"STARTTLS\r\n" + injected)
        rest, closed = await w.read_until_eof(5)
    assert closed, f"connection still open after STARTTLS injection; got {rest!r}"
    assert b"250" not in rest  # the injected commands were never answered
    assert b"\x16\x03" not in rest  # and no TLS was started (no handshake record)
    assert up.rcpt_attempts == [] and up.transactions == []


async def test_client_starttls_alone_works(smtp_upstream, make_proxy, ca_file):
    """The control for the test above: the same dialogue without the injection."""
    up = smtp_upstream()
    proxy = await make_proxy([listener(up, client_tls="starttls")])
    async with smtp_wire(proxy.port()) as w:
        await w.read_reply()
        await w.command(b"EHLO client.example")
        assert (await w.command(b"STARTTLS"))[0] == 220
        await w.starttls(client_context(ca_file))
        code, ehlo = await w.command(b"EHLO client.example")
        assert code == 250 and b"STARTTLS" not in ehlo
        assert (await w.command(b"QUIT"))[0] == 221


async def test_hostile_upstream_injection_after_starttls_is_refused(
    upstream_cert, make_proxy, ca_file
):
    async with hostile_starttls_upstream(upstream_cert) as hostile:
        proxy = await make_proxy([listener(hostile, target_tls="starttls", target_ca=str(ca_file))])
        replies: list[tuple[int, bytes]] = []
        async with smtp_wire(proxy.port()) as w:
            with trio.move_on_after(10):
                reply = await w.read_reply()
                commands = [
                    b"EHLO client.example",
                    b"MAIL FROM:<alice@example.org>",
                    b"RCPT TO:<bob@example.net>",
                    b"DATA",
                ]
                while reply is not None:
                    replies.append(reply)
                    if reply[0] >= 400 or not commands:
                        break
                    reply = await w.command(commands.pop(0))
            await w.read_until_eof(2)
            transcript = bytes(w.transcript)
    assert hostile.plaintext_commands, "the proxy never talked to the hostile upstream"
    assert INJECTED_REPLY.strip() not in transcript
    assert b"injected" not in transcript
    assert any(400 <= code < 500 for code, _ in replies), transcript
    assert not any(c.upper().startswith(b"MAIL") for c in hostile.tls_commands)


# --- who may connect, whom we trust --------------------------------------------------


async def test_client_outside_allow_clients_is_refused(smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([listener(up)], allow_clients=["127.0.0.2/32"])
    res = await smtplib_session(proxy.port(), [mails.plain()])
    assert res.greeting is not None and 500 <= res.greeting[0] < 600, res
    assert not any(t.delivered for t in res.transactions)
    assert up.connections == 0  # the provider never heard of this client


async def test_allow_clients_by_source_address(smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([listener(up)], allow_clients=["127.0.0.1/32"])
    refused = await smtplib_session(proxy.port(), [mails.plain(1)], source_address=("127.0.0.2", 0))
    assert refused.greeting is not None and refused.greeting[0] >= 500, refused
    assert up.connections == 0
    allowed = await smtplib_session(proxy.port(), [mails.plain(2)])
    assert allowed.transactions[0].delivered
    assert [t.content for t in up.messages] == [mails.plain(2).data]


@pytest.mark.parametrize("target_tls", ["starttls", "implicit"])
@pytest.mark.parametrize("problem", ["unknown-issuer", "wrong-hostname"])
async def test_bad_upstream_certificate(
    problem, target_tls, smtp_upstream, make_proxy, ca, other_ca, ca_file
):
    if problem == "unknown-issuer":
        cert = other_ca.issue_cert("127.0.0.1", "localhost")
    else:
        cert = ca.issue_cert("smtp.wrong-name.example")
    up = smtp_upstream(tls=target_tls, cert=cert)
    proxy = await make_proxy(
        [
            listener(up, name="verify", target_tls=target_tls, target_ca=str(ca_file)),
            listener(up, name="noverify", target_tls=target_tls, target_verify=False),
        ]
    )
    refused = await smtplib_session(proxy.port("verify"), [mails.plain(1)])
    codes = refused.reply_codes()
    assert not any(t.delivered for t in refused.transactions)
    assert any(400 <= c < 500 for c in codes) or refused.error is not None, refused
    assert up.transactions == []

    ok = await smtplib_session(proxy.port("noverify"), [mails.plain(2)])
    assert ok.transactions[0].delivered, ok
    assert [t.content for t in up.messages] == [mails.plain(2).data]
    assert up.messages[0].tls is not None


# --- credentials ---------------------------------------------------------------------


async def test_injected_credentials_are_used_and_never_leak(
    smtp_upstream, make_proxy, ca_file, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    up = smtp_upstream(tls="starttls", auth="required", user=RELAY_USER, password=SECRET)
    wrong = "Wr0ng-Pw-for-the-provider-91c"
    proxy = await make_proxy(
        [
            listener(
                up,
                client_tls="starttls",
                target_tls="starttls",
                target_ca=str(ca_file),
                target_user=RELAY_USER,
            ),
            listener(
                up,
                name="wrongpw",
                target_tls="starttls",
                target_ca=str(ca_file),
                target_user=RELAY_USER,
            ),
        ],
        passwords={"smtp": SECRET, "wrongpw": wrong},
    )
    outputs: list[tuple[str, bytes]] = []

    # smtplib: the client does not authenticate; AUTH is not even offered to it
    res = await smtplib_session(proxy.port(), [mails.plain(1)], tls="starttls", ca_file=ca_file)
    assert res.transactions[0].delivered, res
    assert "auth" not in res.esmtp_features
    # msmtp and swaks, also without credentials of their own
    m = await msmtp(proxy.port(), mails.plain(2), workdir=tmp_path, tls="starttls", ca_file=ca_file)
    assert m.returncode == 0, m.text()
    outputs.append(("msmtp", m.output))
    if shutil.which("swaks"):
        require_swaks_tls()
        s = await swaks(
            proxy.port(),
            "--tls", "--tls-verify", "--tls-ca-path", str(ca_file),
            "--from", "alice@example.org", "--to", "bob@example.net",
        )  # fmt: skip
        assert s.returncode == 0, s.text()
        outputs.append(("swaks", s.output))

    # the upstream saw the configured login on every transaction
    assert len(up.messages) == 3
    assert {t.auth_login for t in up.messages} == {RELAY_USER}

    # a provider refusing the configured password: the client gets a 4xx, no secret
    bad = await smtplib_session(proxy.port("wrongpw"), [mails.plain(3)])
    assert not any(t.delivered for t in bad.transactions)
    assert any(400 <= c < 500 for c in bad.reply_codes()), bad
    assert any(not a.success for a in up.auth_attempts)

    # ... and no password anywhere: logs, reports, client-visible output
    reports = await proxy.wait_reports(3)
    assert len(reports) == 3
    for rep in reports:
        assert rep["smtp"]["auth_user"] in (None, RELAY_USER)
    ours = [r for r in caplog.records if r.name != "mail.log"]  # not the test upstream's
    assert any(r.name.startswith("mailtee") for r in ours)
    for pw in (SECRET, wrong):
        for r in ours:
            text = f"{r.getMessage()} {r.args!r} {r.exc_text}"
            assert_no_secret(text, f"log record {r.name}: {r.getMessage()[:80]!r}", pw)
        for path in proxy.report_files():
            assert_no_secret(path.read_bytes(), str(path), pw)
        for name, out in outputs:
            assert_no_secret(out, f"{name} output", pw)
        assert_no_secret(repr(bad) + repr(res), "client-visible replies", pw)


async def test_client_auth_is_relayed_and_recorded(smtp_upstream, make_proxy, ca_file):
    up = smtp_upstream(tls="starttls", auth="required", user="carol", password="carol-pw")
    proxy = await make_proxy(
        [listener(up, client_tls="starttls", target_tls="starttls", target_ca=str(ca_file))]
    )
    bad = await smtplib_session(
        proxy.port(), [mails.plain(1)], tls="starttls", ca_file=ca_file, login=("carol", "nope")
    )
    assert bad.auth is not None and bad.auth[0] == 535, bad  # the upstream's verdict
    res = await smtplib_session(
        proxy.port(), [mails.plain(2)], tls="starttls", ca_file=ca_file, login=("carol", "carol-pw")
    )
    assert res.auth is not None and res.auth[0] == 235, res
    assert res.transactions[0].delivered
    assert [t.auth_login for t in up.messages] == ["carol"]
    (rep,) = await proxy.wait_reports(1)
    assert rep["smtp"]["auth_user"] == "carol"


async def test_shutdown_closes_upstream_connections(smtp_upstream, make_proxy, monkeypatch):
    """Cancelling the service (stop, reload) must close both sides of open sessions.

    A socket the proxy forgets is closed by the garbage collector, which hides the bug
    from the upstream's point of view; catch the collector's ResourceWarning instead.
    """
    leaked: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: leaked.append(str(u.exc_value)))
    up = smtp_upstream()
    async with trio.open_nursery() as inner:
        from proxy.serve import serve_listeners

        base = await make_proxy([listener(up)])  # only for its config and state dir
        service = await inner.start(serve_listeners, base.config, _secrets(), base.state_dir)
        async with smtp_wire(service.ports["smtp"]) as w:
            assert (await w.read_reply())[0] == 220
            assert (await w.command(b"EHLO idle.example"))[0] == 250
            assert up.connections >= 1
            inner.cancel_scope.cancel()  # the session is idle, waiting for the client
    with trio.move_on_after(3):
        while up.disconnections < up.connections and not leaked:  # noqa: ASYNC110
            await trio.sleep(0.01)
    gc.collect()
    monkeypatch.undo()
    assert leaked == [], f"sockets left to the garbage collector (upstream port {up.port})"
    assert up.disconnections == up.connections, "an upstream connection was left open"


def _secrets():
    from admin.config import Secrets

    return Secrets()
