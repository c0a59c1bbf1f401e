"""Access tokens for blocking code: mailbox pulls (`[[mailbox]] account = NAME`).

Why a separate entry point. The token manager (accounts/tokens.py) is Trio code shared by
a service's sessions. A pull runs in a worker thread of the service or in the
`proxy-admin pull` command, where no Trio loop of its own is running; `token_source()`
gives it a plain function that runs the same manager in a short Trio run of its own per
call. Nothing is lost by not sharing the service's in-memory cache: the token store
holds the current access token (sealed) under its cross-process lock, so a pull uses the
token the service or another pull already has and asks the provider only when that one
is about to expire -- one token request per expiry, as for the listeners.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from accounts.store import TokenStore
from accounts.tokens import TokenManager
from admin.config import Config, Secrets


def token_source(
    config: Config, secrets: Secrets, store: TokenStore
) -> Callable[[str], tuple[str, str]]:
    """`tokens(account name)` -> (a valid access token, the account's `sasl` mechanism).
    Raises TokenUnavailable (one line, no secret) when the account has no usable sign-in
    or its token endpoint is down."""

    def tokens(name: str) -> tuple[str, str]:
        manager = TokenManager(config, secrets, store)
        token = trio.run(manager.token, name).access_token
        return token, manager.account(name).sasl

    return tokens
