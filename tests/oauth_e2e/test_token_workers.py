"""Two worker processes, one token store (issue 14 with `workers` > 1): the processes
share one refresh per expiry, counted at the real authorization server, and never race
with a rotating refresh token (which would end in invalid_grant, or a stale refresh token
written over the current one).

Each process (tests/oauth_e2e/token_worker.py) runs its own TokenManager, as each worker
of `proxy-admin run` does, with a few sessions per account asking for tokens every 50 ms
across about three expiries, for a listener account and a per-person one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accounts.store import TokenStore, password_key, store_key
from admin.config import load_secrets

from .conftest import LOCAL_PASSWORDS, Deployment

LIFETIME = 6  # handed out for 4.5 s of it (refresh ahead), then refreshed
DURATION = 16.0  # about three refreshes per account
WORKER = Path(__file__).with_name("token_worker.py")


@pytest.fixture
def oauth_lifetime() -> int:
    return LIFETIME


def test_two_processes_share_one_refresh_per_expiry(deployment: Deployment) -> None:
    d = deployment
    assert d.add_device_account("shared", "shared@example.test").returncode == 0
    run = d.add_device_account(
        "alice", "alice@example.test", "--password-stdin", stdin=LOCAL_PASSWORDS["alice"] + "\n"
    )
    assert run.returncode == 0, run.stderr
    issued_before = len(d.oauth.issued_access_tokens())
    assert d.oauth.count("refresh_token") == 0
    deadline = time.time() + DURATION
    argv = [sys.executable, str(WORKER), str(d.config_path), str(deadline),
            "shared", f"alice:{LOCAL_PASSWORDS['alice']}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=DURATION + 60)
        assert p.returncode == 0, stderr.decode()[-2000:]
        outs.append(json.loads(stdout))
    a, b = outs
    assert a["errors"] == b["errors"] == [] and a["alerts"] == b["alerts"] == []
    refreshed = d.oauth.issued_access_tokens()[issued_before:]
    assert d.oauth.count("refresh_token") == len(refreshed)
    for name in ("shared", "alice"):
        # Both processes went through the same tokens in the same order: had either
        # refreshed on its own, it would hold a token the other never saw.
        assert a["seen"][name] == b["seen"][name], name
        assert len(a["seen"][name]) >= 3, name  # several expiries were crossed
    # Every token the server issued was used by both: one refresh per expiry, in all.
    assert sorted(a["seen"]["shared"] + a["seen"]["alice"]) == sorted(refreshed)
    assert a["requests"].get("shared", 0) + b["requests"].get("shared", 0) == len(
        a["seen"]["shared"]
    )
    # The rotated refresh tokens: the store holds the newest of each account's chain.
    store = TokenStore.beside(d.config_path.with_name("secrets.toml"))
    key = store_key(load_secrets(d.config_path).accounts["key"])
    salt = store.salt("alice")
    assert salt is not None
    rts = {
        store.refresh_token("shared", key),
        store.refresh_token("alice", password_key(LOCAL_PASSWORDS["alice"], salt)),
    }
    assert rts == set(d.oauth.issued_refresh_tokens()[-2:])
    # The access token is on disk only sealed.
    text = store.path.read_text()
    assert all(tok not in text for tok in d.oauth.issued_access_tokens())
    assert all(tok not in text for tok in d.oauth.issued_refresh_tokens())
    assert store.get("shared")["state"] == store.get("alice")["state"] == "ok"
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
