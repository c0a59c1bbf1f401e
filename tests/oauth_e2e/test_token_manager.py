"""TokenManager against the real authorization server: concurrent sessions share one
refresh, rotated refresh tokens are stored (encrypted), wrong keys unlock nothing."""

from __future__ import annotations

import trio

from accounts.store import TokenStore, password_key, store_key
from accounts.tokens import TokenManager, TokenUnavailable
from admin.config import load_secrets

from .conftest import LOCAL_PASSWORDS, Deployment


def manager(d: Deployment, alerts: list[tuple[str, str, str]]) -> TokenManager:
    store = TokenStore.beside(d.config_path.with_name("secrets.toml"))
    return TokenManager(
        d.config(), load_secrets(d.config_path), store, alert=lambda *a: alerts.append(a)
    )


async def test_concurrent_sessions_share_one_refresh(deployment: Deployment) -> None:
    d = deployment
    assert d.add_device_account("shared", "shared@example.test").returncode == 0
    tm = manager(d, alerts := [])
    got: list[str] = []

    async def session() -> None:
        got.append((await tm.token("shared")).access_token)

    before = d.oauth.count("refresh_token")
    async with trio.open_nursery() as n:
        for _ in range(30):
            n.start_soon(session)
    assert d.oauth.count("refresh_token") - before == 1
    assert len(set(got)) == 1 and got[0] in d.oauth.issued_access_tokens()
    # The server rotated the refresh token; the new one is what the store now holds.
    key = store_key(load_secrets(d.config_path).accounts["key"])
    assert tm.store.refresh_token("shared", key) == d.oauth.issued_refresh_tokens()[-1]
    assert alerts == [] and tm.snapshot()[0]["state"] == "ok"
    assert got[0] not in repr(tm.snapshot())


async def test_per_person_needs_the_owners_password(deployment: Deployment) -> None:
    d = deployment
    run = d.add_device_account(
        "alice", "alice@example.test", "--password-stdin", stdin=LOCAL_PASSWORDS["alice"] + "\n"
    )
    assert run.returncode == 0
    tm = manager(d, alerts := [])
    for password, outcome in ((None, "temp"), (LOCAL_PASSWORDS["bob"], "reauth")):
        try:
            await tm.token("alice", password)
        except TokenUnavailable as e:
            assert e.outcome == outcome
        else:
            raise AssertionError("a token without the owner's password")
    assert d.oauth.count("refresh_token") == 0  # nothing was even asked
    assert [a[1] for a in alerts] == ["account alice: no OAuth2 token"]
    tm.configure(d.config(), load_secrets(d.config_path))
    tm._states.clear()  # a fresh service: the right password unlocks it
    tok = await tm.token("alice", LOCAL_PASSWORDS["alice"])
    assert tok.access_token in d.oauth.issued_access_tokens()
    store = tm.store
    salt = store.salt("alice")
    assert salt is not None
    rotated = store.refresh_token("alice", password_key(LOCAL_PASSWORDS["alice"], salt))
    assert rotated == d.oauth.issued_refresh_tokens()[-1]


async def test_short_outage_keeps_the_still_valid_token(deployment: Deployment) -> None:
    import time

    from .conftest import LIFETIME

    d = deployment
    assert d.add_device_account("shared", "shared@example.test").returncode == 0
    offset = [0.0]
    tm = manager(d, alerts := [])
    tm.clock = lambda: time.time() + offset[0]  # the service's view of "now", moved by hand
    first = await tm.token("shared")
    assert d.oauth.count("refresh_token") == 1
    # In the refresh-ahead window (a fifth of the lifetime left), the endpoint is down:
    # the refresh fails, but the still-valid token keeps mail flowing; one alert.
    offset[0] = LIFETIME * 0.8
    d.oauth.state.down = True
    assert (await tm.token("shared")).access_token == first.access_token
    assert d.oauth.count("refresh_token") == 2
    assert [a[1] for a in alerts] == ["account shared: no OAuth2 token"]
    assert tm.snapshot()[0]["state"] == "unreachable"
    # Too close to its expiry: fail closed rather than hand out a dying token.
    offset[0] = LIFETIME - 0.5
    try:
        await tm.token("shared")
    except TokenUnavailable as e:
        assert e.outcome == "temp"
    else:
        raise AssertionError("a token half a second before its expiry")
    # The endpoint is back (after the retry window): a new token, state ok, no new alert.
    d.oauth.state.down = False
    offset[0] += 11
    again = await tm.token("shared")
    assert again.access_token != first.access_token and tm.snapshot()[0]["state"] == "ok"
    assert len(alerts) == 1
