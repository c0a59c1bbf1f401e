"""The Trio side of OAuth2 listeners: local logins, tokens, and the session that uses them.

Theory of operation. A listener with `target_account` or `local_login` gets an
`OAuthBinding` (built with the listener in proxy/serve.py) and its sessions are
`OAuthSession`s: the ordinary session driver plus two things.
1. SMTP with `target_account`: before the session starts, the account's token is fetched
   (`TokenManager`, refreshed in a worker thread) and handed to the core.
2. `VerifyLogin` from the core: the local password is checked with
   archive.logins.verify_password (argon2id) in a worker thread; the account is the
   listener's `target_account` or the one whose email is one of the user's addresses;
   its token becomes the SASL initial response the core sends upstream. The answer goes
   back synchronously (`core.login_result`), before anything else is read.
Only outcomes are logged (user names, account names, "reauth"/"temp"), never a password
or token.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from accounts.sasl import MECHANISMS, initial_response
from accounts.tokens import TokenManager, TokenUnavailable
from admin.config import AccountConfig, ListenerConfig
from proxy import actions as A
from proxy.login import LoginResult, VerifyLogin
from proxy.session import Session
from proxy.settings import RelaySettings

log = logging.getLogger("mailtee.login")


class LoginBackend:
    """Local users from the archive catalog (one connection, opened on first use)."""

    def __init__(self, catalog_path: Path) -> None:
        self.path = catalog_path
        self._catalog: Any = None
        self._lock = threading.Lock()

    def check(self, login: str, password: str) -> tuple[str, list[str]] | None:
        """(user name, addresses) when the password is the user's; blocking (argon2)."""
        from archive.catalog import Catalog
        from archive.logins import resolve_login, verify_password

        with self._lock:
            if self._catalog is None:
                if not self.path.exists():
                    return None
                self._catalog = Catalog(self.path)
            cat = self._catalog
        name = resolve_login(cat, login)
        if name is None:
            verify_password(cat, "\x00no-such-user", password)  # same cost as a real one
            return None
        if not verify_password(cat, name, password):
            return None
        rows = cat.query(
            "SELECT ui.value FROM user_identities ui JOIN users u ON u.id = ui.user "
            "WHERE u.name = ? AND ui.kind = 'address'",
            (name,),
        )
        return name, [r["value"] for r in rows]


@dataclass
class OAuthBinding:
    """How one listener's sessions authenticate upstream."""

    listener: ListenerConfig
    tokens: TokenManager
    backend: LoginBackend
    target_host: str
    target_port: int

    @property
    def smtp_mode(self) -> str:
        return "local" if self.listener.local_login else "account"

    def make_core(self, settings: RelaySettings) -> A.RelayCore:
        lc = self.listener
        if lc.protocol == "pop3":
            from proxy.pop3.local_login import LocalLoginPop3

            return LocalLoginPop3(settings)
        from proxy.smtp.oauth_relay import OAuthSmtpRelay

        mode = self.smtp_mode
        if mode == "account":
            acc = self.tokens.account(lc.target_account or "")
            settings = dataclasses.replace(settings, target_user=acc.email)
        return OAuthSmtpRelay(settings, mode=mode, account=lc.target_account or "")

    async def account_token(self, acc: AccountConfig, password: str | None) -> LoginResult:
        try:
            tok = await self.tokens.token(acc.name, password)
        except TokenUnavailable as e:
            log.warning("no token for account %s (%s): %s", acc.name, e.outcome, e)
            return LoginResult(e.outcome, account=acc.name)
        response = initial_response(
            acc.sasl, acc.email, tok.access_token, self.target_host, self.target_port
        )
        return LoginResult(
            "ok", mechanism=MECHANISMS[acc.sasl], response=response, account=acc.name
        )

    async def listener_token(self) -> LoginResult:
        try:
            acc = self.tokens.account(self.listener.target_account or "")
        except TokenUnavailable:
            return LoginResult("no_account")
        return await self.account_token(acc, None)

    async def login(self, login: str, password: str) -> LoginResult:
        found = await trio.to_thread.run_sync(self.backend.check, login, password)
        if found is None:
            log.warning("local login failed listener=%s login=%s", self.listener.name, login[:64])
            return LoginResult("bad")
        user, addresses = found
        if self.listener.target_account:
            acc = self.tokens.account(self.listener.target_account)
        else:
            found_acc = self.tokens.for_addresses(addresses)
            if found_acc is None:
                log.warning("local login %s: no account for the user's addresses", user)
                return LoginResult("no_account", user=user)
            acc = found_acc
        result = await self.account_token(acc, password if acc.protect == "password" else None)
        return dataclasses.replace(result, user=user)


class OAuthSession(Session):
    def __init__(self, binding: OAuthBinding, *args: Any) -> None:
        super().__init__(*args)
        self.binding = binding

    async def run(self) -> None:
        core = self.core
        if self.env.protocol == "smtp" and self.binding.smtp_mode == "account":
            try:
                result = await self.binding.listener_token()
            except Exception as e:  # noqa: BLE001 - fail closed, keep the service up
                log.error("token lookup failed unexpectedly: %s", type(e).__name__)
                result = LoginResult("temp")
            core.provide_token(result)  # type: ignore[attr-defined]
        await super().run()

    async def _perform(self, action: A.Action) -> None:
        if isinstance(action, VerifyLogin):
            try:
                result = await self.binding.login(action.login, action.password)
            except Exception as e:  # noqa: BLE001 - one broken login must not end the service
                # Only the type: a message could quote what the failing code was given.
                log.error("local login failed unexpectedly: %s", type(e).__name__)
                result = LoginResult("temp")
            self.core.login_result(result)  # type: ignore[attr-defined]
            return
        await super()._perform(action)


def binding_for(lc: ListenerConfig, tokens: TokenManager, state_dir: Path) -> OAuthBinding:
    """The OAuth binding of a `target_account`/`local_login` listener."""
    return OAuthBinding(
        lc,
        tokens,
        LoginBackend(state_dir / "archive" / "catalog.sqlite"),
        lc.target_host,
        lc.upstream_port,
    )


def new_session(
    binding: OAuthBinding, env: Any, settings: RelaySettings, stream: Any, peer: tuple
) -> OAuthSession:
    return OAuthSession(binding, env, binding.make_core(settings), stream, peer)
