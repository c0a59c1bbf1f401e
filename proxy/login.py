"""What a relay core and its driver say to each other about local logins and tokens.

A core that lets clients log in to mailtee itself (proxy/pop3/local_login.py,
proxy/smtp/oauth_relay.py) emits `VerifyLogin`; the driver (proxy/oauth_session.py)
checks the local password (argon2id, in a worker thread), gets the account's access token
(accounts.tokens, refreshed off the Trio loop) and answers synchronously with
`core.login_result(LoginResult)` before it reads anything else -- like `CommitMessage`
and `archive_result`. The core never sees a socket, a thread or the token manager.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class VerifyLogin:
    """Check this local login and prepare the upstream SASL response."""

    login: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class LoginResult:
    """The answer to VerifyLogin.

    `outcome`: "ok"; "bad" (wrong local user or password: the client may try again);
    "no_account" (no OAuth2 account for this person); "reauth" (the account's sign-in is
    dead: `account reauth`); "temp" (token endpoint unreachable: try later).
    """

    outcome: str
    user: str | None = None
    mechanism: bytes = b"XOAUTH2"
    response: bytes = field(default=b"", repr=False)  # base64 SASL initial response
    account: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"
