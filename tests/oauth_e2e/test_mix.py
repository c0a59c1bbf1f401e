"""Acceptance: a 2-minute mix of 20 clients across several access-token expiries.

10 SMTP clients (smtplib, listener account, no client AUTH) and 10 POP3 clients
(poplib, local logins, the listener account upstream) work in a loop through mailtee
against Postfix + Dovecot that accept only valid tokens (RFC 7662 introspection). The
access token lives 20 s, so it expires about eight times; the authorization server counts
the refresh requests. Expected: every session succeeds, and there is one refresh per
expiry -- consecutive refreshes are at least (lifetime - refresh-ahead margin) apart,
never one per session. Marked `e2e`; it takes about two minutes by design.
"""

from __future__ import annotations

import logging
import poplib
import random
import smtplib

import pytest
import trio

from accounts.tokens import AHEAD_SHARE
from fixtures import mails

from .conftest import LOCAL_PASSWORDS, Deployment
from .oauth_env import check_no_secrets, ctx, provider, service_log

pytestmark = pytest.mark.e2e

DURATION = 120.0
LIFETIME = 20
CLIENTS = 10  # of each protocol


@pytest.fixture
def oauth_lifetime() -> int:
    return LIFETIME


def smtp_once(port: int, n: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        mail = mails.plain(n)
        refused = s.sendmail(mail.sender, mail.recipients, mail.data)
        assert not refused


def pop3_once(port: int, user: str, d: Deployment) -> int:
    p = poplib.POP3_SSL("127.0.0.1", port, timeout=60, context=ctx(d.ca_file))
    try:
        p.user(user)
        p.pass_(LOCAL_PASSWORDS[user])
        count, _ = p.stat()
        for i in range(count):
            p.retr(i + 1)
        return count
    finally:
        p.quit()


async def test_twenty_clients_two_minutes_one_refresh_per_expiry(
    deployment: Deployment, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    d = deployment
    assert d.add_device_account("shared", "shared@example.test").returncode == 0
    with provider(d) as (dovecot, postfix):
        dovecot.deliver("shared@example.test", b"Subject: mix\r\n\r\nmix\r\n")
        d.add_listener(name="smtp", protocol="smtp", target_port=postfix.port,
                       target_account="shared")  # fmt: skip
        d.add_listener(name="pop", protocol="pop3", client_tls="implicit",
                       target_port=dovecot.port, target_account="shared")  # fmt: skip
        service = await d.start(nursery)
        before = d.oauth.count("refresh_token")
        limiter = trio.CapacityLimiter(2 * CLIENTS)
        done = {"smtp": 0, "pop3": 0, "retr": 0}
        rng = random.Random(14)
        deadline = trio.current_time() + DURATION

        async def smtp_client(i: int) -> None:
            while trio.current_time() < deadline:
                n = 1000 * i + done["smtp"]
                await trio.to_thread.run_sync(smtp_once, service.ports["smtp"], n, limiter=limiter)
                done["smtp"] += 1
                await trio.sleep(rng.uniform(0.5, 2.5))

        async def pop3_client(i: int) -> None:
            user = "alice" if i % 2 else "bob"
            while trio.current_time() < deadline:
                got = await trio.to_thread.run_sync(
                    pop3_once, service.ports["pop"], user, d, limiter=limiter
                )
                done["pop3"] += 1
                done["retr"] += got
                await trio.sleep(rng.uniform(0.5, 2.5))

        async with trio.open_nursery() as clients:
            for i in range(CLIENTS):
                clients.start_soon(smtp_client, i)
                clients.start_soon(pop3_client, i)

        times = d.oauth.times("refresh_token")[before:]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        expiries = DURATION / LIFETIME
        print(
            f"mix: {done} in {DURATION:.0f}s; {len(times)} refreshes "
            f"(gaps {[round(g, 1) for g in gaps]}), {d.oauth.state.introspections} introspections"
        )
        # Crossed several expiries, and never two refreshes for one expiry.
        assert len(times) >= expiries - 1
        assert all(g >= LIFETIME * (1 - AHEAD_SHARE) - 1.0 for g in gaps), gaps
        assert len(times) <= DURATION / (LIFETIME * (1 - AHEAD_SHARE) - 1.0) + 1
        # Every session worked: all mail is in Postfix's queue, every RETR archived.
        assert len(postfix.queue_ids()) == done["smtp"]
        assert done["retr"] == done["pop3"] and done["pop3"] >= CLIENTS
        reports = list(d.reports_dir.glob("*.mpr"))
        assert len(reports) == done["smtp"] + done["retr"]
        assert d.oauth.state.introspections >= done["pop3"]
        check_no_secrets(d, service_log(caplog))
