"""Endpoints, scopes and defaults of the providers mailtee knows.

Microsoft 365: device code for people (the gateway has no browser), client credentials
for app-only access (`POP.AccessAsApp`/`SMTP.SendAsApp` granted to the app; the scope is
then `https://outlook.office.com/.default`). Google: authorization code with PKCE (Gmail
scopes are not allowed with the device flow); the redirect goes to a loopback address the
operator's browser cannot reach, and the operator pastes the final URL back.
"""

from __future__ import annotations

from dataclasses import dataclass

from accounts.errors import AccountError
from admin.config import AccountConfig

MS_LOGIN = "https://login.microsoftonline.com"
MS_SCOPES = [
    "https://outlook.office.com/POP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
    "offline_access",
]
MS_APP_SCOPES = ["https://outlook.office.com/.default"]
GOOGLE_AUTHORIZE = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN = "https://oauth2.googleapis.com/token"
GOOGLE_SCOPES = ["https://mail.google.com/"]
#: where Google sends the browser after consent; nothing listens there, the operator
#: copies the address bar (a loopback redirect is what Google allows for desktop clients)
DEFAULT_REDIRECT = "http://localhost:1"

DEFAULT_FLOW = {"microsoft": "device", "google": "auth-code", "generic": "device"}


class ProviderError(AccountError):
    """An account's provider settings are incomplete; one line naming what is missing."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    flow: str
    token_url: str
    authorize_url: str | None
    device_url: str | None
    scopes: list[str]
    redirect_uri: str


def endpoints(acc: AccountConfig) -> Endpoints:
    """The effective endpoints of `acc`: its own settings over the provider's defaults."""
    flow = acc.flow or DEFAULT_FLOW[acc.provider]
    authorize_url: str | None
    device_url: str | None
    if acc.provider == "microsoft":
        tenant = acc.tenant or ("organizations" if flow != "client-credentials" else None)
        if tenant is None:
            raise ProviderError(f"account {acc.name}: client credentials need --tenant")
        base = f"{MS_LOGIN}/{tenant}/oauth2/v2.0"
        token_url = acc.token_url or f"{base}/token"
        authorize_url = acc.authorize_url or f"{base}/authorize"
        device_url = acc.device_url or f"{base}/devicecode"
        scopes = acc.scopes or (MS_APP_SCOPES if flow == "client-credentials" else MS_SCOPES)
    elif acc.provider == "google":
        if flow == "device":
            raise ProviderError(
                f"account {acc.name}: Google does not allow Gmail scopes with the device "
                "flow; use --flow auth-code"
            )
        token_url = acc.token_url or GOOGLE_TOKEN
        authorize_url = acc.authorize_url or GOOGLE_AUTHORIZE
        device_url = acc.device_url
        scopes = acc.scopes or GOOGLE_SCOPES
    else:
        if not acc.token_url:
            raise ProviderError(f"account {acc.name}: a generic provider needs --token-url")
        token_url, authorize_url, device_url = acc.token_url, acc.authorize_url, acc.device_url
        scopes = acc.scopes
        if flow == "device" and not device_url:
            raise ProviderError(f"account {acc.name}: the device flow needs --device-url")
        if flow == "auth-code" and not authorize_url:
            raise ProviderError(f"account {acc.name}: the auth-code flow needs --authorize-url")
    return Endpoints(
        flow,
        token_url,
        authorize_url,
        device_url,
        list(scopes),
        acc.redirect_uri or DEFAULT_REDIRECT,
    )
