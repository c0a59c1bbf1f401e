"""A provider that echoes the AUTH line cannot leak the injected password (issue 10
item 5) -- not to the client, not to the log.

The provider here is aiosmtpd with two hostile habits: it refuses AUTH with a text that
repeats the whole command ("535 ... AUTH PLAIN <base64 of user and password>"), or it
accepts and then repeats the payload in its reply to MAIL. Before the fix the first was
logged verbatim and the second relayed to the client.
"""

from __future__ import annotations

import base64
import logging
import socket

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from fixtures.smtp_clients import smtp_wire
from proxy.scrub import Scrubber, scrub_log

pytestmark = pytest.mark.e2e

SECRET = "Echo-Pr0vider-Pw-9c1d"
USER = "relay-user"
PLAIN = base64.b64encode(f"\0{USER}\0{SECRET}".encode()).decode()


def forms() -> list[str]:
    return [SECRET, base64.b64encode(SECRET.encode()).decode(), PLAIN]


class EchoingSMTP(SMTP):
    refuse = True
    echoed = ""

    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's naming
        type(self).echoed = arg
        if self.refuse:
            await self.push(f"535 5.7.8 Authentication failed: AUTH {arg}")
        else:
            self.session.authenticated = True
            await self.push("235 2.7.0 Authentication successful")

    async def push(self, status: str) -> None:
        if status.startswith("250 OK") and self.echoed:
            status = f"250 2.1.0 Ok, sender of AUTH {self.echoed}"
        await super().push(status)


class EchoingController(Controller):
    def factory(self) -> SMTP:
        return EchoingSMTP(self.handler, auth_require_tls=False, **self.SMTP_kwargs)


class _Handler:
    pass


@pytest.fixture
def echoing_upstream():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = EchoingController(_Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port
    controller.stop()
    EchoingSMTP.echoed = ""
    EchoingSMTP.refuse = True


def assert_clean(text: str, where: str) -> None:
    for form in forms():
        assert form not in text, f"{form!r} in {where}"


@pytest.mark.parametrize("refuse", [True, False], ids=["refusal-echo", "mail-reply-echo"])
async def test_echoed_auth_never_reaches_client_or_log(
    echoing_upstream, make_proxy, caplog, refuse: bool
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailtee")
    EchoingSMTP.refuse = refuse
    listener = {"name": "smtp", "target_port": echoing_upstream, "target_user": USER}
    proxy = await make_proxy([listener], passwords={"smtp": SECRET})
    async with smtp_wire(proxy.port("smtp")) as w:
        assert (await w.read_reply())[0] == 220
        await w.command(b"EHLO client.test")
        if not refuse:
            code, reply = await w.command(b"MAIL FROM:<a@example.org>")
            assert code == 250 and b"[redacted]" in reply
        await w.send(b"QUIT\r\n")
        await w.read_until_eof()
    assert EchoingSMTP.echoed.endswith(PLAIN)  # the provider did see (and echo) it
    assert_clean(w.transcript.decode("utf-8", "replace"), "the client's transcript")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    if refuse:
        assert "refused the configured credentials" in logged
    assert_clean(logged, "the log")


def test_scrubbers() -> None:
    s = Scrubber([SECRET], USER)
    line = f"535 AUTH PLAIN {PLAIN} and {SECRET}\r\n".encode()
    assert s.relay(line) == b"535 AUTH PLAIN [redacted] and [redacted]\r\n"
    other_user = base64.b64encode(f"x\0other\0{SECRET}".encode())
    assert s.relay(b"550 " + other_user + b"\r\n") == b"550 [redacted]\r\n"
    assert (
        s.relay(b"250 2.0.0 Ok: queued as 4F1ABCDEF\r\n")
        == b"250 2.0.0 Ok: queued as 4F1ABCDEF\r\n"
    )
    assert not Scrubber([None]).active
    assert scrub_log("refused: AUTH XOAUTH2 dXNlcj1h") == "refused: AUTH XOAUTH2 [redacted]"
    token = base64.b64encode(b"user=a@b\x01auth=Bearer ya29\x01\x01").decode()
    assert scrub_log(f"said {token}") == "said [redacted]"
    assert scrub_log("path /var/lib/mailtee/reports ok") == "path /var/lib/mailtee/reports ok"
