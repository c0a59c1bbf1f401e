"""The service's access-token cache: one refresh per expiry, shared by every session.

Theory of operation. Sessions ask `TokenManager.token(name)` for an account's access
token. A token is handed out while it has more than `ahead` seconds left (a quarter of
its lifetime, at most five minutes), so no session starts with a token that dies during
its AUTH. Past that, the first asker takes the account's `trio.Lock` and refreshes; the
others wait on the same lock and get the new token -- one token request per expiry, not
one per session. The HTTP call (Authlib + requests) runs in a worker thread, so the Trio
loop and every other session go on meanwhile.

Failures: `invalid_grant` (revoked or expired sign-in) and an unreachable endpoint both
raise `TokenUnavailable` (the sessions fail closed), record the state in the token store
for `account show`, and raise one alert per change of state (not one per session). After
a failure the endpoint is not asked again for `RETRY_AFTER` seconds: sessions fail fast.
While the endpoint is merely unreachable, a token that is still valid keeps being used
until shortly before it expires (what refreshing ahead buys).

Keys: a listener account's refresh token is decrypted with the secrets.toml key; a
per-person account's only with the key derived from its owner's local password, which a
session supplies while that person logs in. The decrypted refresh token and the derived
key then stay in this process's memory (never on disk) so refreshes need no password.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from accounts import flows
from accounts.providers import ProviderError, endpoints
from accounts.store import StoreError, TokenStore, WrongKey, password_key, store_key
from admin.config import AccountConfig, Config, Secrets

#: never hand out a token with less than this share of its lifetime left ...
AHEAD_SHARE = 0.25
#: ... or less than this many seconds (capped for long-lived tokens)
AHEAD_MAX = 300.0
#: after a failed refresh, fail fast for this long before asking the provider again
RETRY_AFTER = 10.0
#: a token with at least this much life left (capped at a tenth of its lifetime) is still
#: handed out while the token endpoint is unreachable
MIN_LEFT = 30.0

Alert = Callable[[str, str, str], Any]


class TokenUnavailable(Exception):
    """No access token: `outcome` is "reauth" (sign-in dead), "temp" (endpoint down) or
    "no_account"; the message is one line without secrets."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass
class _State:
    lock: trio.Lock = field(default_factory=trio.Lock)
    token: flows.Token | None = None
    lifetime: float = 0.0
    refresh_token: str | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)
    failed: str | None = None
    failed_at: float = 0.0
    message: str = ""


def reauth_hint(name: str) -> str:
    return f"run `proxy-admin account reauth {name}`"


class TokenManager:
    def __init__(
        self,
        config: Config,
        secrets: Secrets,
        store: TokenStore,
        *,
        alert: Alert | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.secrets, self.store = config, secrets, store
        self.alert = alert
        self.clock = clock
        self.requests: dict[str, int] = {}
        self._states: dict[str, _State] = {}

    def configure(self, config: Config, secrets: Secrets) -> None:
        """Take a reloaded configuration; cached tokens of removed accounts are dropped."""
        self.config, self.secrets = config, secrets
        names = {a.name for a in config.account}
        for name in [n for n in self._states if n not in names]:
            del self._states[name]

    def account(self, name: str) -> AccountConfig:
        for acc in self.config.account:
            if acc.name == name:
                return acc
        raise TokenUnavailable("no_account", f"no account named {name!r}")

    def for_addresses(self, addresses: list[str]) -> AccountConfig | None:
        """The per-person account whose email is one of these addresses."""
        wanted = {a.lower() for a in addresses}
        for acc in self.config.account:
            if acc.email.lower() in wanted:
                return acc
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        """What `status` shows per account (never a token)."""
        now = self.clock()
        out = []
        for acc in self.config.account:
            st = self._states.get(acc.name)
            tok = st.token if st else None
            out.append(
                {
                    "name": acc.name,
                    "email": acc.email,
                    "state": (st.failed if st and st.failed else "ok" if tok else "idle"),
                    "token_expires_in": round(tok.expires_at - now) if tok else None,
                    "token_requests": self.requests.get(acc.name, 0),
                }
            )
        return out

    def _fresh(self, st: _State) -> flows.Token | None:
        tok = st.token
        if tok is None:
            return None
        ahead = min(AHEAD_MAX, AHEAD_SHARE * st.lifetime)
        return tok if tok.expires_at - ahead > self.clock() else None

    async def token(self, name: str, password: str | None = None) -> flows.Token:
        """A valid access token for account `name` (see the module docstring)."""
        acc = self.account(name)
        st = self._states.setdefault(name, _State())
        if (tok := self._fresh(st)) is not None:
            return tok
        async with st.lock:
            if (tok := self._fresh(st)) is not None:
                return tok  # someone else refreshed while we waited: share it
            if st.failed and self.clock() - st.failed_at < RETRY_AFTER:
                if (tok := self._still_valid(st)) is not None:
                    return tok
                raise TokenUnavailable(
                    "reauth" if st.failed == "invalid_grant" else "temp", st.message
                )
            return await self._refresh(acc, st, password)

    def _still_valid(self, st: _State) -> flows.Token | None:
        """The current token while it still has a little life left (the refresh-ahead
        window is what lets mail go on through a short token-endpoint outage)."""
        tok = st.token
        if tok is None or st.failed == "invalid_grant":
            return None
        return tok if tok.expires_at - self.clock() > min(MIN_LEFT, 0.1 * st.lifetime) else None

    async def _refresh(self, acc: AccountConfig, st: _State, password: str | None) -> flows.Token:
        try:
            ep = endpoints(acc)
        except ProviderError as e:
            raise TokenUnavailable("reauth", str(e)) from None
        client = flows.Client(
            acc.client_id, self.secrets.account.get(acc.name, {}).get("client_secret"), acc.ca
        )
        if ep.flow != "client-credentials" and st.refresh_token is None:
            await self._unlock(acc, st, password)
        self.requests[acc.name] = self.requests.get(acc.name, 0) + 1
        started = self.clock()
        try:
            tok = await trio.to_thread.run_sync(
                flows.fetch, client, ep, st.refresh_token, abandon_on_cancel=True
            )
        except flows.FlowError as e:
            await self._failed(acc, st, e.kind, str(e))
            if (still := self._still_valid(st)) is not None:
                return still
            raise TokenUnavailable(
                "reauth" if e.kind == "invalid_grant" else "temp", str(e)
            ) from None
        st.lifetime = max(0.0, tok.expires_at - started)
        try:
            if tok.refresh_token and tok.refresh_token != st.refresh_token and st.key:
                # The provider rotated the refresh token (Microsoft does): keep the new one.
                await trio.to_thread.run_sync(
                    self.store.save_refresh, acc.name, st.key, tok.refresh_token
                )
            elif st.failed:
                await trio.to_thread.run_sync(self.store.set_state, acc.name, "ok", "")
        except StoreError as e:
            # The token works; only the disk copy is stale. Say so, keep serving.
            if self.alert is not None:
                self.alert("account", f"account {acc.name}: token store not writable", str(e))
        st.refresh_token = tok.refresh_token or st.refresh_token
        st.token, st.failed, st.message = tok, None, ""
        return tok

    async def _unlock(self, acc: AccountConfig, st: _State, password: str | None) -> None:
        """Decrypt the stored refresh token into memory (with which key: see the top)."""
        try:
            if acc.protect == "password":
                if password is None:
                    raise TokenUnavailable(
                        "temp", f"account {acc.name}: its owner has not logged in yet"
                    )
                salt = await trio.to_thread.run_sync(self.store.salt, acc.name)
                if salt is None:
                    raise WrongKey(f"account {acc.name}: no sign-in stored")
                key = await trio.to_thread.run_sync(password_key, password, salt)
            else:
                secret = self.secrets.accounts.get("key")
                if not secret:
                    raise WrongKey("secrets.toml has no [accounts] key")
                key = store_key(secret)
            rt = await trio.to_thread.run_sync(self.store.refresh_token, acc.name, key)
        except WrongKey as e:
            await self._failed(acc, st, "invalid_grant", str(e))
            raise TokenUnavailable("reauth", str(e)) from None
        except StoreError as e:
            raise TokenUnavailable("temp", str(e)) from None
        if rt is None:
            msg = f"account {acc.name}: never signed in"
            await self._failed(acc, st, "invalid_grant", msg)
            raise TokenUnavailable("reauth", msg)
        st.refresh_token, st.key = rt, key

    async def _failed(self, acc: AccountConfig, st: _State, kind: str, message: str) -> None:
        first = st.failed != kind
        st.failed, st.failed_at = kind, self.clock()
        if kind == "invalid_grant":
            st.token = None
            st.refresh_token = None  # dead; a reauth writes a new one to the store
            state, what = "reauth", f"sign-in no longer valid ({message}); {reauth_hint(acc.name)}"
        else:
            state, what = "error", f"token endpoint failed ({message}); mail waits until it works"
        st.message = what
        try:
            await trio.to_thread.run_sync(self.store.set_state, acc.name, state, what)
        except StoreError:
            pass
        if first and self.alert is not None:
            self.alert("account", f"account {acc.name}: no OAuth2 token", what)
