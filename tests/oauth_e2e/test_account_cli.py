"""`proxy-admin account ...` against the real authorization server: the three sign-in
flows, what is stored (encrypted, 0600), what is shown (never a token), and removal."""

from __future__ import annotations

import json
import stat

import pytest

from accounts.store import TokenStore, WrongKey, password_key, store_key
from admin.config import load_secrets

from .conftest import APP_ID, APP_SECRET, LOCAL_PASSWORDS, Deployment


def _secrets_in(text: str, d: Deployment) -> list[str]:
    found = [
        t for t in d.oauth.issued_access_tokens() + d.oauth.issued_refresh_tokens() if t in text
    ]
    found += [p for p in LOCAL_PASSWORDS.values() if p in text]
    found += [APP_SECRET] if APP_SECRET in text else []
    return found


def test_device_flow_signs_in_and_stores_only_ciphertext(deployment: Deployment) -> None:
    d = deployment
    run = d.add_device_account("shared", "shared@example.test")
    assert run.returncode == 0, run.stderr
    assert "enter the code" in run.stdout and "signed in as shared@example.test" in run.stdout
    store = TokenStore.beside(d.config_path.with_name("secrets.toml"))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.path.parent.name == "tokens" and store.path.parent.parent == d.root
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    raw = store.path.read_text()
    assert d.oauth.issued_refresh_tokens() and not _secrets_in(raw, d)
    # The key from secrets.toml decrypts it; a wrong key decrypts nothing.
    key = store_key(load_secrets(d.config_path).accounts["key"])
    assert store.refresh_token("shared", key) in d.oauth.issued_refresh_tokens()
    with pytest.raises(WrongKey):
        store.refresh_token("shared", bytes(32))
    show = d.cli("account", "show", "shared", "--json")
    info = json.loads(show.stdout)
    assert info["state"] == "ok" and info["refresh_token"] == "stored (encrypted)"
    listing = d.cli("account", "list")
    assert "shared" in listing.stdout and "ok" in listing.stdout
    assert not _secrets_in("".join(d.outputs), d)


def test_auth_code_with_pkce_pasted_redirect(deployment: Deployment) -> None:
    d = deployment
    run = d.add_authcode_account("gmail", "bob@example.test")
    assert run.returncode == 0, run.stderr
    assert "code_challenge_method=S256" in run.stdout
    assert d.oauth.count("authorization_code") == 1
    assert json.loads(d.cli("account", "show", "gmail", "--json").stdout)["state"] == "ok"
    assert not _secrets_in("".join(d.outputs), d)


def test_client_credentials_app_only(deployment: Deployment) -> None:
    d = deployment
    run = d.cli(
        "account", "add", "app", "--provider", "generic", "--email", "device@example.test",
        "--flow", "client-credentials", "--client-id", APP_ID, "--client-secret-stdin",
        "--token-url", d.oauth.token_url, "--scope", "mail", "--ca", str(d.ca_file),
        stdin=APP_SECRET + "\n",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert d.oauth.count("client_credentials") == 1
    assert load_secrets(d.config_path).account["app"]["client_secret"] == APP_SECRET
    assert "client_secret = " not in d.config_path.read_text()
    wrong = d.cli(
        "account", "add", "app2", "--provider", "generic", "--email", "x@example.test",
        "--flow", "client-credentials", "--client-id", APP_ID, "--client-secret-stdin",
        "--token-url", d.oauth.token_url, "--scope", "mail", "--ca", str(d.ca_file),
        stdin="not-the-secret\n",
    )  # fmt: skip
    assert wrong.returncode == 1 and "invalid_client" in wrong.stderr
    assert "not-the-secret" not in wrong.stderr
    assert not _secrets_in("".join(d.outputs), d)


def test_per_person_account_is_locked_by_the_local_password(deployment: Deployment) -> None:
    d = deployment
    bad = d.add_device_account(
        "alice", "alice@example.test", "--password-stdin", stdin="wrong-password\n"
    )
    assert bad.returncode == 2 and "not the local password" in bad.stderr
    ok = d.add_device_account(
        "alice2", "alice@example.test", "--password-stdin", stdin=LOCAL_PASSWORDS["alice"] + "\n"
    )
    assert ok.returncode == 0, ok.stderr
    store = TokenStore.beside(d.config_path.with_name("secrets.toml"))
    salt = store.salt("alice2")
    assert salt is not None
    assert store.refresh_token("alice2", password_key(LOCAL_PASSWORDS["alice"], salt))
    for guess in ("wrong-password", LOCAL_PASSWORDS["bob"], ""):
        with pytest.raises(WrongKey):
            store.refresh_token("alice2", password_key(guess, salt))
    # Nor does the secrets.toml key open a per-person token.
    secrets = load_secrets(d.config_path)
    if "key" in secrets.accounts:
        with pytest.raises(WrongKey):
            store.refresh_token("alice2", store_key(secrets.accounts["key"]))
    assert not _secrets_in("".join(d.outputs), d)


def test_errors_are_one_line_and_remove_cleans_up(deployment: Deployment) -> None:
    d = deployment
    denied = d.add_device_account("shared", "shared@example.test", approve=False)
    assert denied.returncode == 1 and denied.stderr.count("\n") == 1
    assert "access_denied" in denied.stderr and "account reauth" not in denied.stdout
    assert json.loads(d.cli("account", "show", "shared", "--json").stdout)["state"] == (
        "not signed in"
    )
    google_device = d.cli(
        "account", "add", "g", "--provider", "google", "--email", "g@example.test",
        "--client-id", "x", "--flow", "device",
    )  # fmt: skip
    assert google_device.returncode == 2 and "device flow" in google_device.stderr
    d.add_listener(name="smtp1", protocol="smtp", target_account="shared")
    refused = d.cli("account", "remove", "shared")
    assert refused.returncode == 1 and "smtp1" in refused.stderr
    cfg = d.config()
    cfg.listener = []
    from admin.config import save_config

    save_config(cfg, d.config_path)
    assert d.cli("account", "remove", "shared").returncode == 0
    assert d.cli("account", "show", "shared").returncode == 1
    assert "shared" not in TokenStore.beside(d.config_path.with_name("secrets.toml")).load()


def test_listener_options_for_oauth(deployment: Deployment) -> None:
    d = deployment
    no_tls = d.cli("listener", "add", "p", "--protocol", "pop3", "--target", "127.0.0.1",
                   "--local-login")  # fmt: skip
    assert no_tls.returncode == 2 and "local logins need client_tls" in no_tls.stderr
    unknown = d.cli("listener", "add", "s", "--protocol", "smtp", "--target", "127.0.0.1",
                    "--target-account", "nope")  # fmt: skip
    assert unknown.returncode == 2 and "no account named 'nope'" in unknown.stderr
    ok = d.cli("listener", "add", "p", "--protocol", "pop3", "--target", "127.0.0.1",
               "--client-tls", "implicit", "--local-login")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    show = d.cli("listener", "show", "p")
    assert "local_login:     yes" in show.stdout
    assert json.loads(d.cli("listener", "show", "p", "--json").stdout)["local_login"] is True
    both = d.cli("listener", "add", "s", "--protocol", "smtp", "--target", "127.0.0.1",
                 "--local-login", "--client-tls", "starttls", "--target-user", "x",
                 "--target-password-stdin", stdin="pw\n")  # fmt: skip
    assert both.returncode == 2 and "exclude each other" in both.stderr
    off = d.cli("listener", "set", "p", "--no-local-login")
    assert off.returncode == 0 and "local_login" not in d.config_path.read_text()
