"""`proxy-admin run` with two worker processes and OAuth2 accounts: SMTP clients (the
listener account) and POP3 clients (alice's per-person account, local login) through
both workers, against Postfix + Dovecot that accept only valid tokens, across several
token expiries. Expected: every session works, and one refresh per expiry per account
counted at the authorization server -- not one per worker.

Each round sends sessions until both workers hold a current token of both accounts
(asked on each worker's own control socket), then waits past the expiry.
"""

from __future__ import annotations

import smtplib
from functools import partial

import pytest
import trio

from accounts.tokens import AHEAD_SHARE
from admin.config import load_secrets
from fixtures import mails
from proxy import control
from proxy.service import run_service
from proxy.workers import worker_socket

from .conftest import LIFETIME, LOCAL_PASSWORDS, Deployment
from .oauth_env import check_no_secrets, pop3_fetch, provider, setup_accounts

pytestmark = pytest.mark.e2e

ROUNDS = 3
WORKERS = 2


def smtp_once(port: int, n: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        mail = mails.plain(n)
        assert not s.sendmail(mail.sender, mail.recipients, mail.data)


def worker_accounts(d: Deployment, index: int) -> dict[str, dict]:
    reply = control.request(worker_socket(d.state_dir, index), "status", timeout=10)
    return {a["name"]: a for a in reply["status"]["accounts"]}


async def test_two_workers_share_one_refresh_per_expiry(
    deployment: Deployment, nursery: trio.Nursery
) -> None:
    d = deployment
    setup_accounts(d)  # "shared" (listener account) and "alice" (per-person)
    with provider(d) as (dovecot, postfix):
        msg = dovecot.deliver("alice@example.test", b"Subject: w\r\n\r\nworkers\r\n")
        d.add_listener(name="smtp", protocol="smtp", target_port=postfix.port,
                       target_account="shared")  # fmt: skip
        d.add_listener(name="pop", protocol="pop3", client_tls="implicit",
                       target_port=dovecot.port, local_login=True)  # fmt: skip
        sup = await nursery.start(
            partial(
                run_service, d.config(), load_secrets(d.config_path), d.config_path, workers=WORKERS
            )  # fmt: skip
        )
        smtp_port, pop_port = sup.reservations["smtp"].port, sup.reservations["pop"].port
        before = len(d.oauth.state.tokens)
        sent, alice_pw = 0, LOCAL_PASSWORDS["alice"]

        async def batch() -> None:
            nonlocal sent
            async with trio.open_nursery() as n:
                for _ in range(2):
                    sent += 1
                    n.start_soon(trio.to_thread.run_sync, smtp_once, smtp_port, sent)
                    n.start_soon(partial(trio.to_thread.run_sync, pop3_fetch, pop_port,
                                         "alice", alice_pw, d.ca_file, False))  # fmt: skip

        for _ in range(ROUNDS):
            for _ in range(20):
                await batch()
                held = [await trio.to_thread.run_sync(worker_accounts, d, i)
                        for i in range(WORKERS)]  # fmt: skip
                if all((w[a]["token_expires_in"] or 0) > 0 for w in held for a in w):
                    break
            else:
                raise AssertionError(f"sessions never reached both workers: {held}")
            await trio.sleep(LIFETIME + 0.5)  # every token handed out is now expired

        # What the authorization server counted, per account (user).
        refreshes: dict[str, list[float]] = {}
        for tok in d.oauth.state.tokens[before:]:
            refreshes.setdefault(tok.user.email, []).append(tok.issued_at)
        assert set(refreshes) == {"shared@example.test", "alice@example.test"}
        for email, times in refreshes.items():
            # Both workers used a fresh token in every round, yet never two refreshes
            # for one expiry: consecutive refreshes are (nearly) a token's hand-out
            # time apart; one request per worker would be a fraction of a second.
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            assert len(times) >= ROUNDS, (email, times)
            assert all(g >= LIFETIME * (1 - AHEAD_SHARE) - 1.0 for g in gaps), (email, gaps)
        assert d.oauth.count("refresh_token") == sum(len(t) for t in refreshes.values())
        assert len(postfix.queue_ids()) == sent
        got = await trio.to_thread.run_sync(
            pop3_fetch, pop_port, "alice", LOCAL_PASSWORDS["alice"], d.ca_file, False
        )
        assert got == [msg]
        held = [await trio.to_thread.run_sync(worker_accounts, d, i) for i in range(WORKERS)]
        assert all(w[a]["state"] == "ok" for w in held for a in w), held
        check_no_secrets(d, (d.root / "tokens" / "tokens.json").read_text())
