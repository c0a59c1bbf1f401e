"""The OAuth2 calls themselves, through Authlib's client (blocking; run them in a thread).

Every failure becomes a `FlowError` with a `kind` the caller acts on:
- `invalid_grant`: the refresh token is dead (revoked, expired, password changed, or
  Google's 7-day limit for apps in "Testing") -- only `account reauth` helps;
- `unreachable`: the token endpoint did not answer (network, TLS, 5xx) -- try again later;
- `refused`: any other OAuth2 error (bad client secret, consent missing, ...).
The message is one line made of the provider's error code and description; it never
holds a token, a code or a secret (those are only in request bodies we do not echo).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session

from accounts.errors import AccountError
from accounts.providers import Endpoints

# Authlib's debug log lines quote token responses: never let them reach the journal,
# whatever log_level the operator picks.
logging.getLogger("authlib").setLevel(logging.WARNING)

#: seconds one HTTP request to the provider may take
HTTP_TIMEOUT = 20.0
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class FlowError(AccountError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Client:
    """Who we are at the provider: client id, optional secret, CA bundle."""

    client_id: str
    client_secret: str | None = None
    ca: str | None = None

    def __repr__(self) -> str:
        return f"Client({self.client_id!r}, secret={'set' if self.client_secret else 'none'})"


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str
    expires_at: float
    refresh_token: str | None

    def __repr__(self) -> str:  # never print a token
        refresh = "yes" if self.refresh_token else "no"
        return f"Token(expires_at={self.expires_at:.0f}, refresh={refresh})"


def _session(client: Client, ep: Endpoints, **kw: Any) -> OAuth2Session:
    session = OAuth2Session(
        client.client_id,
        client.client_secret,
        token_endpoint_auth_method="client_secret_post" if client.client_secret else "none",
        scope=" ".join(ep.scopes) or None,
        default_timeout=HTTP_TIMEOUT,
        **kw,
    )
    return session


def _tls(client: Client) -> dict[str, Any]:
    # Per request: requests lets REQUESTS_CA_BUNDLE override a session-wide `verify`.
    return {"verify": client.ca} if client.ca else {}


def _token(data: dict[str, Any], old_refresh: str | None = None) -> Token:
    access = data.get("access_token")
    if not access:
        raise FlowError("refused", "the token response has no access_token")
    expires_in = float(data.get("expires_in") or 3600)
    return Token(str(access), time.time() + expires_in, data.get("refresh_token") or old_refresh)


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one Authlib call; map its failures to FlowError (see the module docstring)."""
    try:
        return fn(*args, **kwargs)
    except OAuthError as e:
        kind = "invalid_grant" if e.error == "invalid_grant" else "refused"
        text = f"{e.error}: {e.description}" if e.description else str(e.error)
        raise FlowError(kind, text.splitlines()[0][:300]) from None
    except requests.HTTPError as e:
        status = e.response.status_code if e.response is not None else 0
        raise FlowError("unreachable", f"token endpoint answered HTTP {status}") from None
    except requests.RequestException as e:
        raise FlowError("unreachable", f"token endpoint unreachable: {type(e).__name__}") from None
    except ValueError as e:
        raise FlowError("unreachable", str(e).splitlines()[0][:200]) from None


def refresh(client: Client, ep: Endpoints, refresh_token: str) -> Token:
    session = _session(client, ep)
    data = _call(session.refresh_token, ep.token_url, refresh_token=refresh_token, **_tls(client))
    return _token(data, refresh_token)


def client_credentials(client: Client, ep: Endpoints) -> Token:
    if not client.client_secret:
        raise FlowError("refused", "client credentials need a client secret")
    session = _session(client, ep)
    data = _call(session.fetch_token, ep.token_url, grant_type="client_credentials", **_tls(client))
    return _token(data)


def fetch(client: Client, ep: Endpoints, refresh_token: str | None) -> Token:
    """A fresh access token: client credentials, or the refresh grant."""
    if ep.flow == "client-credentials":
        return client_credentials(client, ep)
    if not refresh_token:
        raise FlowError("invalid_grant", "no refresh token stored")
    return refresh(client, ep, refresh_token)


# --- interactive sign-in (proxy-admin account add|reauth) -------------------------------


@dataclass(frozen=True, slots=True)
class DeviceStart:
    device_code: str
    user_code: str
    verification_uri: str
    interval: float
    expires_at: float
    message: str


def device_start(client: Client, ep: Endpoints) -> DeviceStart:
    assert ep.device_url
    session = _session(client, ep)
    body = {"client_id": client.client_id, "scope": " ".join(ep.scopes)}
    if client.client_secret:
        body["client_secret"] = client.client_secret
    resp = _call(session.post, ep.device_url, data=body, withhold_token=True, **_tls(client))
    try:
        data = resp.json()
    except ValueError:
        data = {}
    if resp.status_code != 200 or "device_code" not in data:
        err = data.get("error", f"HTTP {resp.status_code}")
        desc = str(data.get("error_description", "")).splitlines()[:1]
        raise FlowError("refused", f"device authorization failed: {err} {' '.join(desc)}".strip())
    uri = data.get("verification_uri") or data.get("verification_url") or ""
    return DeviceStart(
        data["device_code"],
        data["user_code"],
        uri,
        float(data.get("interval", 5)),
        time.time() + float(data.get("expires_in") or 900),
        data.get("message") or f"Open {uri} and enter the code {data['user_code']}",
    )


def device_poll(
    client: Client, ep: Endpoints, start: DeviceStart, sleep: Any = time.sleep
) -> Token:
    """Poll the token endpoint until the person has signed in (RFC 8628 3.4/3.5)."""
    interval = start.interval
    session = _session(client, ep)
    while time.time() < start.expires_at:
        sleep(interval)
        try:
            data = _call(
                session.fetch_token,
                ep.token_url,
                grant_type=DEVICE_GRANT,
                device_code=start.device_code,
                client_id=client.client_id,
                **_tls(client),
            )
        except FlowError as e:
            text = str(e)
            if text.startswith("authorization_pending"):
                continue
            if text.startswith("slow_down"):
                interval += 5
                continue
            raise
        return _token(data)
    raise FlowError("refused", "the sign-in code expired before anyone used it")


@dataclass(frozen=True, slots=True)
class AuthCodeStart:
    url: str
    state: str
    code_verifier: str


def auth_code_start(client: Client, ep: Endpoints) -> AuthCodeStart:
    assert ep.authorize_url
    session = _session(client, ep, redirect_uri=ep.redirect_uri, code_challenge_method="S256")
    verifier = generate_token(64)
    extra = {"access_type": "offline", "prompt": "consent"}  # Google: a refresh token, always
    url, state = session.create_authorization_url(ep.authorize_url, code_verifier=verifier, **extra)
    return AuthCodeStart(url, state, verifier)


def auth_code_finish(client: Client, ep: Endpoints, start: AuthCodeStart, pasted: str) -> Token:
    """Exchange the code in the pasted redirect URL (state checked) for tokens."""
    query = parse_qs(urlsplit(pasted.strip()).query)
    if "error" in query:
        raise FlowError("refused", f"sign-in refused: {query['error'][0]}")
    if query.get("state", [""])[0] != start.state:
        raise FlowError("refused", "the pasted address is not the answer to this sign-in (state)")
    if "code" not in query:
        raise FlowError("refused", "the pasted address has no code= parameter")
    session = _session(
        client, ep, redirect_uri=ep.redirect_uri, code_challenge_method="S256", state=start.state
    )
    data = _call(
        session.fetch_token,
        ep.token_url,
        authorization_response=pasted.strip(),
        code_verifier=start.code_verifier,
        **_tls(client),
    )
    return _token(data)
