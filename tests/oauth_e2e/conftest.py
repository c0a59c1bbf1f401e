"""A whole OAuth2 deployment for the tests in this folder, with real components.

- `oauth`: the Authlib authorization server (tests/fixtures/oauth_server.py) on loopback;
- `Deployment`: a config directory made the operator's way: config.toml, the
  appliance certificate, local users with argon2id passwords in the archive catalog,
  accounts added and signed in with the real `proxy-admin account add` (device code, auth
  code + PKCE via a pasted URL, client credentials) in a subprocess, and the real service
  (`proxy.service.run_service`, as `proxy-admin run` starts it) in the test's nursery.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import trio
import trustme

from admin.config import Config, ListenerConfig, Secrets, load_config, save_config, save_secrets
from fixtures.oauth_server import OAuthServer, start_oauth_server

PROXY_ADMIN = str(Path(sys.executable).parent / "proxy-admin")
LIFETIME = 8  # seconds an access token lives: refresh is exercised within a test
CLIENT_ID = "mailtee-test-app"
APP_ID, APP_SECRET = "mailtee-app-only", "app-only-client-secret-xyz"
LOCAL_PASSWORDS = {"alice": "alice-local-pass-1", "bob": "bob-local-pass-22"}
ADDRESSES = {"alice": "alice@example.test", "bob": "bob@example.test"}


@pytest.fixture
def oauth_lifetime() -> int:
    """Access-token lifetime of the test server (a test module may override it)."""
    return LIFETIME


@pytest.fixture
def oauth(ca: trustme.CA, ca_file: Path, oauth_lifetime: int) -> Iterator[OAuthServer]:
    with start_oauth_server(ca, str(ca_file), lifetime=oauth_lifetime) as server:
        server.add_client(CLIENT_ID)
        server.add_client(APP_ID, APP_SECRET, grant_types=("client_credentials",), scope="mail")
        yield server


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Deployment:
    root: Path
    oauth: OAuthServer
    ca_file: Path
    outputs: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def reports_dir(self) -> Path:
        return self.state_dir / "reports"

    def config(self) -> Config:
        return load_config(self.config_path)

    def cli(self, *args: str, stdin: str = "") -> CliRun:
        proc = subprocess.run(
            [PROXY_ADMIN, "--config", str(self.config_path), *args],
            input=stdin, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        self.outputs += [proc.stdout, proc.stderr]
        return CliRun(proc.returncode, proc.stdout, proc.stderr)

    def _endpoints(self) -> list[str]:
        o = self.oauth
        return [
            "--provider", "generic", "--client-id", CLIENT_ID, "--token-url", o.token_url,
            "--device-url", o.device_url, "--authorize-url", o.authorize_url,
            "--scope", "mail", "--scope", "offline_access", "--ca", str(self.ca_file),
        ]  # fmt: skip

    def _interactive(self, argv: list[str], stdin: str, on_line: Any) -> CliRun:
        """Run the CLI; `on_line(line, proc)` reacts to each stdout line (the person)."""
        full = [PROXY_ADMIN, "--config", str(self.config_path), *argv]
        with subprocess.Popen(
            full, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        ) as proc:  # fmt: skip
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(stdin)
            proc.stdin.flush()
            out = []
            for line in proc.stdout:
                out.append(line)
                on_line(line, proc)
            if not proc.stdin.closed:
                proc.stdin.close()
            proc.wait(timeout=60)
            err = proc.stderr.read() if proc.stderr else ""
        self.outputs += ["".join(out), err]
        return CliRun(proc.returncode, "".join(out), err)

    def add_device_account(
        self, name: str, email: str, *extra: str, stdin: str = "", approve: bool = True
    ) -> CliRun:
        """`account add --flow device`; the person signs in "on another PC" (approve)."""

        def person(line: str, proc: Any) -> None:
            if "enter the code" in line:
                self.oauth.approve_device(line.rsplit(" ", 1)[1].strip(), email, approve)

        argv = ["account", "add", name, "--email", email, "--flow", "device",
                *self._endpoints(), *extra]  # fmt: skip
        return self._interactive(argv, stdin, person)

    def reauth_device(self, name: str, email: str, stdin: str = "") -> CliRun:
        """`account reauth NAME` of a device-flow account, signed in again by `email`."""

        def person(line: str, proc: Any) -> None:
            if "enter the code" in line:
                self.oauth.approve_device(line.rsplit(" ", 1)[1].strip(), email)

        return self._interactive(["account", "reauth", name], stdin, person)

    def add_authcode_account(self, name: str, email: str, *extra: str) -> CliRun:
        """`account add --flow auth-code`: open the printed URL, paste the redirect back."""

        def person(line: str, proc: Any) -> None:
            if line.startswith("https://"):
                self.oauth.state.authorize_as = email
                resp = requests.get(line.strip(), verify=str(self.ca_file), allow_redirects=False)
                assert resp.status_code == 302, resp.text
                proc.stdin.write(resp.headers["Location"] + "\n")
                proc.stdin.close()

        argv = ["account", "add", name, "--email", email, "--flow", "auth-code",
                *self._endpoints(), *extra]  # fmt: skip
        return self._interactive(argv, "", person)

    def add_listener(self, **fields: Any) -> None:
        config = self.config()
        lst = ListenerConfig(**{"listen": "127.0.0.1", "port": 0, "target_host": "127.0.0.1",
                                **fields})  # fmt: skip
        config.listener = [*config.listener, lst]
        save_config(config, self.config_path)

    def mail_alerts_to(self, port: int) -> None:
        """[alerts] through an SMTP sink on 127.0.0.1:port (to ops@example.net)."""
        from admin.config import AlertsConfig

        config = self.config()
        config.alerts = AlertsConfig(smtp_host="127.0.0.1", smtp_port=port, to=["ops@example.net"])
        save_config(config, self.config_path)

    async def start(self, nursery: trio.Nursery) -> Any:
        from admin.config import load_secrets
        from proxy.service import run_service

        config = self.config()
        secrets = load_secrets(self.config_path)
        return await nursery.start(run_service, config, secrets, self.config_path)

    async def status(self) -> CliRun:
        return await trio.to_thread.run_sync(self.cli, "status", "--json")


def make_users(state_dir: Path) -> None:
    from archive.catalog import Catalog
    from archive.logins import set_password
    from archive.users import UserSpec, add_user

    (state_dir / "archive").mkdir(parents=True, exist_ok=True)
    cat = Catalog(state_dir / "archive" / "catalog.sqlite")
    try:
        for name, pw in LOCAL_PASSWORDS.items():
            add_user(cat, UserSpec(name, [ADDRESSES[name]]))
            set_password(cat, name, pw)
    finally:
        cat.close()


@pytest.fixture
def deployment(
    tmp_path: Path, oauth: OAuthServer, ca_file: Path, proxy_cert: trustme.LeafCert
) -> Deployment:
    root = tmp_path / "etc"
    root.mkdir()
    d = Deployment(root, oauth, ca_file)
    state = d.state_dir
    tls = state / "tls"
    tls.mkdir(parents=True)
    proxy_cert.cert_chain_pems[0].write_to_path(str(tls / "cert.pem"))
    proxy_cert.private_key_pem.write_to_path(str(tls / "key.pem"))
    os.chmod(tls / "key.pem", 0o600)
    save_config(Config(hostname="mailtee.test", state_dir=str(state)), d.config_path)
    save_secrets(Secrets(), d.config_path)
    make_users(state)
    return d
