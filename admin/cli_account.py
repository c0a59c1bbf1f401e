"""`proxy-admin account ...`: OAuth2 accounts (Microsoft 365, Google, generic providers).

`add` saves the account to config.toml (the client secret to secrets.toml) and signs in
at once; `reauth` signs in again (after `invalid_grant`, a password change, Google's 7-day
"Testing" limit). The sign-in flows work on a headless box:
- device code: the command prints a URL and a code; sign in on any PC; it waits;
- auth code + PKCE: the command prints a URL; open it on any PC, consent, and paste the
  address the browser ends on (an error page on localhost is expected) back here;
- client credentials: nothing to do; a token is fetched once to check the secret.
Reading from stdin, in this order and only when asked for: the client secret
(--client-secret-stdin), the local password (--password-stdin), the pasted address.
Tokens never reach the terminal, the audit log or an error line.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from admin.cli_common import (
    CliContext,
    JsonOpt,
    audit,
    context,
    fail,
    print_fields,
    print_json,
    print_table,
    reload_hint,
    terminal_safe,
)
from admin.paths import secrets_path

if TYPE_CHECKING:
    from accounts.store import TokenStore
    from admin.config import AccountConfig, Config

account_app = typer.Typer(
    help="OAuth2 accounts mailtee signs in to the provider with (Microsoft 365, Gmail).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(account_app, name="account")


NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Account name.", show_default=False)]
PasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Per-person account: read the local password of the user who owns --email "
        "from stdin; the refresh token is encrypted with a key derived from it, so only "
        "that person's login can unlock it.",
    ),
]
SecretStdinOpt = Annotated[
    bool,
    typer.Option(
        "--client-secret-stdin",
        help="Read the app's client secret from stdin (stored in secrets.toml, 0600).",
    ),
]


def _store(c: CliContext) -> TokenStore:
    from accounts.store import TokenStore  # cryptography, argon2: only when a command runs

    return TokenStore.beside(secrets_path(c.config_path))


def _line(what: str) -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        fail(f"{what}: nothing on stdin", 2)
    return line


def _find(config: Config, name: str) -> AccountConfig:
    for acc in config.account:
        if acc.name == name:
            return acc
    fail(f"no account named {name!r} (see `proxy-admin account list`)", 1)


def _check_owner(c: CliContext, config: Config, acc: AccountConfig, password: str) -> None:
    """Per-person: the password must be the local password of the user owning --email
    (a typo would lock the token with a key nobody can reproduce)."""
    from archive.catalog import Catalog
    from archive.logins import login_names_for_address, verify_password

    path = c.state_dir(config) / "archive" / "catalog.sqlite"
    if not path.exists():
        fail(f"no archive at {path.parent}: add the user first (`proxy-admin user add`)", 1)
    cat = Catalog(path)
    try:
        names = login_names_for_address(cat, acc.email)
        if len(names) != 1:
            fail(f"--email: {acc.email} must belong to exactly one user (found {len(names)})", 2)
        if not verify_password(cat, names[0], password):
            fail(f"--password-stdin: not the local password of user {names[0]!r}", 2)
    finally:
        cat.close()


def _sign_in(c: CliContext, config: Config, acc: AccountConfig, *, password: str | None) -> None:
    """Run the account's flow; store the refresh token encrypted."""
    from accounts import flows  # requests, authlib
    from accounts.providers import ProviderError, endpoints
    from accounts.store import StoreError, new_key, password_key, store_key

    secrets = c.load_secrets(strict_mode=False)
    try:
        ep = endpoints(acc)
    except ProviderError as e:
        fail(str(e), 2)
    client = flows.Client(
        acc.client_id, secrets.account.get(acc.name, {}).get("client_secret"), acc.ca
    )
    try:
        if ep.flow == "device":
            start = flows.device_start(client, ep)
            typer.echo(terminal_safe(start.message, multiline=True))  # the provider's text
            typer.echo(f"Waiting for the sign-in of {acc.email} ...")
            tok = flows.device_poll(client, ep, start)
        elif ep.flow == "auth-code":
            start_ac = flows.auth_code_start(client, ep)
            typer.echo(f"Open this address on any computer and sign in as {acc.email}:")
            typer.echo(start_ac.url)
            typer.echo("Then paste the address your browser ends on (it may show an error):")
            sys.stdout.flush()
            pasted = _line("the redirect address")
            tok = flows.auth_code_finish(client, ep, start_ac, pasted)
        else:
            tok = flows.client_credentials(client, ep)
    except flows.FlowError as e:
        fail(f"sign-in of account {acc.name} failed: {e}", 1)
    store = _store(c)
    try:
        if ep.flow == "client-credentials":
            store.update(acc.name, lambda old: {"state": "ok", "message": "", "flow": ep.flow})
        elif not tok.refresh_token:
            fail(
                f"account {acc.name}: the provider sent no refresh token "
                "(Microsoft: add the offline_access scope)",
                1,
            )
        elif acc.protect == "password":
            import secrets as pysecrets

            assert password is not None
            salt = pysecrets.token_bytes(16)
            store.save_refresh(acc.name, password_key(password, salt), tok.refresh_token, salt=salt)
        else:
            if not secrets.accounts.get("key"):
                secrets = secrets.model_copy(update={"accounts": {"key": new_key()}})
                c.save_secrets(secrets)
            store.save_refresh(acc.name, store_key(secrets.accounts["key"]), tok.refresh_token)
    except StoreError as e:
        fail(str(e), 1)
    typer.echo(f"account {acc.name!r} signed in as {acc.email}")


def _collect(
    c: CliContext, config: Config, acc: AccountConfig, secret_stdin: bool, password_stdin: bool
) -> str | None:
    if secret_stdin:
        secret = _line("--client-secret-stdin")
        secrets = c.load_secrets(strict_mode=False)
        entries = {k: dict(v) for k, v in secrets.account.items()}
        entries.setdefault(acc.name, {})["client_secret"] = secret
        c.save_secrets(secrets.model_copy(update={"account": entries}))
    if acc.protect == "password":
        if not password_stdin:
            fail("a per-person account needs --password-stdin (the owner's local password)", 2)
        password = _line("--password-stdin")
        _check_owner(c, config, acc, password)
        return password
    return None


@account_app.command("add")
def account_add(
    ctx: typer.Context,
    name: NameArg,
    provider: Annotated[
        str, typer.Option("--provider", metavar="microsoft|google|generic", help="The provider.")
    ],
    email: Annotated[str, typer.Option("--email", metavar="ADDR", help="The mailbox address.")],
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            metavar="T",
            help="Microsoft: tenant id or domain "
            "(default 'organizations'; required for client credentials).",
        ),
    ] = None,
    client_id: Annotated[
        str, typer.Option("--client-id", metavar="ID", help="The app's client id.")
    ] = "",
    client_secret_stdin: SecretStdinOpt = False,
    flow: Annotated[
        str | None,
        typer.Option(
            "--flow",
            metavar="device|auth-code|client-credentials",
            help="Sign-in flow (default: microsoft device, google auth-code).",
        ),
    ] = None,
    authorize_url: Annotated[str | None, typer.Option("--authorize-url", metavar="U")] = None,
    token_url: Annotated[str | None, typer.Option("--token-url", metavar="U")] = None,
    device_url: Annotated[str | None, typer.Option("--device-url", metavar="U")] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", metavar="S", help="Scope (repeat; default: the provider's)."),
    ] = None,
    redirect_uri: Annotated[
        str | None,
        typer.Option(
            "--redirect-uri",
            metavar="U",
            help="auth-code: the app's registered redirect URI (default http://localhost:1).",
        ),
    ] = None,
    ca: Annotated[
        str | None,
        typer.Option("--ca", metavar="FILE", help="CA bundle for the provider's endpoints."),
    ] = None,
    sasl: Annotated[
        str, typer.Option("--sasl", metavar="xoauth2|oauthbearer", help="Upstream SASL mechanism.")
    ] = "xoauth2",
    password_stdin: PasswordStdinOpt = False,
    no_sign_in: Annotated[
        bool, typer.Option("--no-sign-in", help="Only save the account; sign in with `reauth`.")
    ] = False,
) -> None:
    """Add an OAuth2 account and sign in to it."""
    from pydantic import ValidationError

    from accounts.providers import ProviderError, endpoints
    from admin.config import LISTENER_NAME_RE, AccountConfig

    c = context(ctx)
    if not LISTENER_NAME_RE.match(name):
        fail(f"NAME: {name!r}: must be 1-32 characters of letters, digits, '-' or '_'", 2)
    if provider not in ("microsoft", "google", "generic"):
        fail(f"--provider: must be microsoft, google or generic, not {provider!r}", 2)
    if flow is not None and flow not in ("device", "auth-code", "client-credentials"):
        fail(f"--flow: must be device, auth-code or client-credentials, not {flow!r}", 2)
    if not client_id:
        fail("--client-id: required (the app registration's client id)", 2)
    if ca is not None:
        from pathlib import Path

        if not Path(ca).is_file():
            fail(f"--ca: {ca}: no such file", 2)
        ca = str(Path(ca).resolve())
    try:
        acc = AccountConfig(
            name=name, provider=provider, email=email, flow=flow, tenant=tenant,  # type: ignore[arg-type]
            client_id=client_id, authorize_url=authorize_url, token_url=token_url,
            device_url=device_url, scopes=list(scope or []), redirect_uri=redirect_uri, ca=ca,
            protect="password" if password_stdin else "secrets", sasl=sasl,  # type: ignore[arg-type]
        )  # fmt: skip
        endpoints(acc)
    except ValidationError as e:
        err = e.errors()[0]
        fail(
            f"--{err['loc'][0] if err['loc'] else 'account'}: "
            f"{err['msg'].removeprefix('Value error, ')}",
            2,
        )
    except ProviderError as e:
        fail(str(e), 2)
    config = c.load_config()
    if any(a.name == name for a in config.account):
        fail(f"account {name!r} already exists (sign in again with `account reauth`)", 1)
    if acc.flow == "client-credentials" and not client_secret_stdin:
        fail("--flow client-credentials: needs --client-secret-stdin", 2)
    if acc.flow == "client-credentials" and password_stdin:
        fail("--password-stdin: app-only accounts keep no refresh token to protect", 2)
    password = _collect(c, config, acc, client_secret_stdin, password_stdin)
    config.account = [*config.account, acc]
    c.save_config(config)
    typer.echo(f"added account {name!r} ({provider}, {email})")
    audit(
        c,
        "account.add",
        {
            "name": name,
            "provider": provider,
            "email": email,
            "flow": endpoints(acc).flow,
            "protect": acc.protect,
        },
    )
    if not no_sign_in:
        _sign_in(c, config, acc, password=password)
    reload_hint()


@account_app.command("reauth")
def account_reauth(
    ctx: typer.Context,
    name: NameArg,
    client_secret_stdin: SecretStdinOpt = False,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Sign in to an account again (after invalid_grant, a revoked consent, ...)."""
    c = context(ctx)
    config = c.load_config()
    acc = _find(config, name)
    password = _collect(c, config, acc, client_secret_stdin, password_stdin)
    _sign_in(c, config, acc, password=password)
    audit(c, "account.reauth", {"name": name})
    typer.echo("A running service uses the new sign-in within seconds.")


def _state(c: CliContext, acc: AccountConfig) -> dict[str, Any]:
    from accounts.store import StoreError

    try:
        rec = _store(c).get(acc.name)
    except StoreError as e:
        return {"state": "unknown", "message": str(e)}
    if not rec:
        return {"state": "not signed in", "action": f"proxy-admin account reauth {acc.name}"}
    state = rec.get("state", "ok")
    out: dict[str, Any] = {
        "state": state,
        "signed_in_at": rec.get("signed_in_at"),
        "updated_at": rec.get("updated_at"),
        "refresh_token": "stored (encrypted)" if "ct" in rec else "none",
    }
    if rec.get("message"):
        out["message"] = rec["message"]
    if state == "reauth":
        out["action"] = f"proxy-admin account reauth {acc.name}"
    elif state == "error":
        out["action"] = "check the provider's token endpoint (network, proxy, CA); mail waits"
    return out


def _account_dict(c: CliContext, acc: AccountConfig) -> dict[str, Any]:
    from accounts.providers import ProviderError, endpoints

    d = acc.model_dump(mode="json", exclude_none=True)
    try:
        ep = endpoints(acc)
        d.update(flow=ep.flow, token_url=ep.token_url, scopes=ep.scopes)
    except ProviderError as e:
        d["problem"] = str(e)
    secrets = c.load_secrets(strict_mode=False)
    d["client_secret"] = (
        "set" if secrets.account.get(acc.name, {}).get("client_secret") else "not set"
    )
    d.update(_state(c, acc))
    return d


@account_app.command("list")
def account_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List the accounts and their sign-in state."""
    c = context(ctx)
    config = c.load_config()
    rows = [_account_dict(c, a) for a in config.account]
    if json_out:
        print_json(rows)
        return
    if not rows:
        typer.echo("no accounts configured (add one with `proxy-admin account add`)")
        return
    print_table(
        ["NAME", "PROVIDER", "EMAIL", "FLOW", "STATE"],
        [(r["name"], r["provider"], r["email"], r.get("flow", "-"), r["state"]) for r in rows],
    )


@account_app.command("show")
def account_show(ctx: typer.Context, name: NameArg, json_out: JsonOpt = False) -> None:
    """Show one account: provider settings, sign-in state and what to do about it."""
    c = context(ctx)
    d = _account_dict(c, _find(c.load_config(), name))
    if json_out:
        print_json(d)
        return
    print_fields((k, ", ".join(v) if isinstance(v, list) else v) for k, v in d.items())


@account_app.command("remove")
def account_remove(ctx: typer.Context, name: NameArg) -> None:
    """Remove an account, its client secret and its stored tokens."""
    from accounts.store import StoreError

    c = context(ctx)
    config = c.load_config()
    _find(config, name)
    users = [lst.name for lst in config.listener if lst.target_account == name]
    if users:
        fail(
            f"account {name!r} is the target account of listener(s) {', '.join(users)}; "
            "change them first (`listener set NAME --target-account ''`)",
            1,
        )
    config.account = [a for a in config.account if a.name != name]
    c.save_config(config)
    if secrets_path(c.config_path).exists():
        secrets = c.load_secrets(strict_mode=False)
        if name in secrets.account:
            rest = {k: v for k, v in secrets.account.items() if k != name}
            c.save_secrets(secrets.model_copy(update={"account": rest}))
    try:
        _store(c).remove(name)
    except StoreError as e:
        fail(str(e), 1)
    typer.echo(f"removed account {name!r}")
    audit(c, "account.remove", {"name": name})
    reload_hint()
