"""The service's access-token cache: one refresh per expiry, shared by every session.

Theory of operation. Sessions ask `TokenManager.token(name)` for an account's access
token. A token is handed out while it has more than `ahead` seconds left (a quarter of
its lifetime, at most five minutes), so no session starts with a token that dies during
its AUTH. Past that, the first asker takes the account's `trio.Lock` and refreshes; the
others wait on the same lock and get the new token -- one token request per expiry, not
one per session. The refresh (lock file, store read, HTTP call through Authlib +
requests, store write) runs in a worker thread, so the Trio loop and every other session
go on meanwhile.

Worker processes: the refresh runs under the account's cross-process lock in the token
store, which also holds the current access token, sealed (accounts/store.py). The first
worker to need a new token requests it and stores it; the others, waiting on the lock or
coming later, re-read the store and take that token -- one request per expiry whatever
the number of workers, and a rotated refresh token is never used twice.

Failures: `invalid_grant` (revoked or expired sign-in) and an unreachable endpoint both
raise `TokenUnavailable` (the sessions fail closed), record the state in the token store
for `account show`, and raise one alert per change of state (not one per session). After
a failure the endpoint is not asked again for `RETRY_AFTER` seconds: sessions fail fast.
While the endpoint is merely unreachable, a token that is still valid keeps being used
until shortly before it expires (what refreshing ahead buys).

Keys: a listener account's refresh token is decrypted with the secrets.toml key; a
per-person account's only with the key derived from its owner's local password, which a
session supplies while that person logs in. The key (the derived one: never on disk)
then stays in this process's memory so refreshes need no password; the tokens are read
from the store, decrypted, at each refresh.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from accounts import flows
from accounts.errors import AccountError
from accounts.providers import Endpoints, ProviderError, endpoints
from accounts.store import StoreError, TokenStore, WrongKey, password_key, store_key, unseal
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


class TokenUnavailable(AccountError):
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
    key: bytes | None = field(default=None, repr=False)
    failed: str | None = None
    failed_at: float = 0.0
    message: str = ""


@dataclass
class _Outcome:
    """What one pass through the refresh lock gave (`_shared_refresh`)."""

    token: flows.Token | None
    lifetime: float
    requested: bool  # a token request was made (False: another worker's token)
    error: flows.FlowError | None = None
    #: the access token found in the store, if any (fallback while refreshing fails)
    stored: tuple[flows.Token, float] | None = None
    store_error: str | None = None


def _ahead(lifetime: float) -> float:
    """Seconds before expiry from which a token is no longer handed out."""
    return min(AHEAD_MAX, AHEAD_SHARE * lifetime)


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
        return tok if tok.expires_at - _ahead(st.lifetime) > self.clock() else None

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
        cached_key = st.key is not None
        if st.key is None:
            await self._unlock(acc, st, password, needed=ep.flow != "client-credentials")
        try:
            out = await trio.to_thread.run_sync(
                self._shared_refresh, acc.name, client, ep, st.key, abandon_on_cancel=True
            )
        except WrongKey as e:
            st.key = None
            if cached_key and acc.protect == "password" and password is not None:
                return await self._refresh(acc, st, password)  # signed in again: new salt
            await self._failed(acc, st, "invalid_grant", str(e))
            raise TokenUnavailable("reauth", str(e)) from None
        except StoreError as e:
            raise TokenUnavailable("temp", str(e)) from None
        if out.requested:
            self.requests[acc.name] = self.requests.get(acc.name, 0) + 1
        newer = out.stored is not None and (
            st.token is None or out.stored[0].expires_at > st.token.expires_at
        )
        if newer and out.stored is not None:
            st.token, st.lifetime = out.stored  # another worker's, maybe in its last minutes
        if out.error is not None:
            await self._failed(acc, st, out.error.kind, str(out.error))
            if (still := self._still_valid(st)) is not None:
                return still
            raise TokenUnavailable(
                "reauth" if out.error.kind == "invalid_grant" else "temp", str(out.error)
            )
        assert out.token is not None
        if out.store_error and self.alert is not None:
            # The token works; only the disk copy is stale. Say so, keep serving.
            self.alert("account", f"account {acc.name}: token store not writable", out.store_error)
        if st.failed and not out.requested:
            with contextlib.suppress(StoreError):
                await trio.to_thread.run_sync(self.store.set_state, acc.name, "ok", "")
        st.token, st.lifetime = out.token, out.lifetime
        st.failed, st.message = None, ""
        return out.token

    def _shared_refresh(
        self, name: str, client: flows.Client, ep: Endpoints, key: bytes | None
    ) -> _Outcome:
        """Blocking, in a worker thread: under the account's cross-process refresh lock,
        take the access token another worker stored if it is fresh, else refresh with the
        refresh token stored now (another worker may have rotated it) and store the
        result. See accounts/store.py for why."""
        with self.store.refreshing(name):
            rec = self.store.get(name)
            stored = None
            if key is not None:
                try:
                    data = self.store.access_of(name, key, rec)
                except (WrongKey, ValueError):
                    data = None  # sealed before a new sign-in: ignore it
                if data is not None:
                    tok = flows.Token(str(data["access_token"]), float(data["expires_at"]), None)
                    stored = tok, float(data["lifetime"])
                    if tok.expires_at - _ahead(stored[1]) > self.clock():
                        return _Outcome(tok, stored[1], requested=False)
            rt = None
            if ep.flow != "client-credentials":
                if key is None or "ct" not in rec:
                    raise WrongKey(f"account {name}: never signed in")
                rt = unseal(name, key, rec)
            started = self.clock()
            try:
                tok = flows.fetch(client, ep, rt)
            except flows.FlowError as e:
                return _Outcome(None, 0.0, requested=True, error=e, stored=stored)
            lifetime = max(0.0, tok.expires_at - started)
            out = _Outcome(tok, lifetime, requested=True)
            if key is None:
                return out  # client credentials without a store key: nothing to share
            access = {"access_token": tok.access_token, "expires_at": tok.expires_at,
                      "lifetime": lifetime}  # fmt: skip
            rotated = tok.refresh_token if tok.refresh_token != rt else None
            try:
                self.store.save_tokens(name, key, rec, access, rotated)
            except StoreError as e:
                out.store_error = str(e)
            return out

    async def _unlock(
        self, acc: AccountConfig, st: _State, password: str | None, *, needed: bool = True
    ) -> None:
        """Find the key of the account's record (which key: see the top); the key stays
        in memory, the tokens are read from the store at each refresh. `needed` False
        (client credentials): without a key the access token is just not shared."""
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
                    if not needed:
                        return
                    raise WrongKey("secrets.toml has no [accounts] key")
                key = store_key(secret)
        except WrongKey as e:
            await self._failed(acc, st, "invalid_grant", str(e))
            raise TokenUnavailable("reauth", str(e)) from None
        except StoreError as e:
            if not needed:
                return
            raise TokenUnavailable("temp", str(e)) from None
        st.key = key

    async def _failed(self, acc: AccountConfig, st: _State, kind: str, message: str) -> None:
        first = st.failed != kind
        st.failed, st.failed_at = kind, self.clock()
        if kind == "invalid_grant":
            st.token = None  # the refresh token is dead; a reauth writes a new one
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
