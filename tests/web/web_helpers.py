"""Helpers for the web tests (conftest.py turns them into fixtures): a state dir with
users and mail, the real web server as a child process (`python -m web ... web serve`,
as `proxy-admin run` starts it), and a small HTTPS client that keeps cookies.

`web_site(extra_config=...)` builds everything in a fresh temp dir: a trustme
certificate in `tls/`, users keiri (user), bob (user), audra (auditor), root (admin)
with local passwords, and imported messages (hostile HTML to keiri, private mail of
bob). The server's stderr is kept in `site.log` so tests can check that no password or
session token was ever logged.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import trustme

from archive.logins import set_password, set_role
from archive.store import Archive
from archive.users import UserSpec, add_user
from fixtures.https_client import Client as _Client
from fixtures.https_client import Reply  # noqa: F401 - the web tests use it

sys.path.insert(0, str(Path(__file__).parent))
import web_mails  # noqa: E402

from fixtures.net import free_port  # noqa: F401 - the web tests import it from here

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse 12"
USERS = {
    "keiri": ("keiri@example.jp", "user"),
    "bob": ("bob@example.jp", "user"),
    "audra": ("audra@example.jp", "auditor"),
    "root": ("root@example.jp", "admin"),
}


class Client(_Client):
    """The HTTPS client; `login` defaults to the test users' password."""

    def login(self, name: str, password: str = PASSWORD) -> Reply:
        return super().login(name, password)


@dataclass
class WebSite:
    root: Path
    config_path: Path
    state_dir: Path
    port: int
    ca_file: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    ids: dict[str, int]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self) -> Client:
        return Client(self.port, self.ca_file)

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def archive(self) -> Archive:
        return Archive(self.state_dir)

    def audit(self, action_prefix: str = "web.") -> list[dict[str, Any]]:
        import json

        with self.archive() as a:
            rows = a.catalog.query(
                "SELECT actor, action, detail FROM audit WHERE action LIKE ? ORDER BY id",
                (f"{action_prefix}%",),
            )
            return [
                {"actor": r["actor"], "action": r["action"], **json.loads(r["detail"])}
                for r in rows
            ]


def _write_cert(ca: trustme.CA, tls_dir: Path) -> None:
    tls_dir.mkdir(parents=True)
    leaf = ca.issue_cert("127.0.0.1", "localhost", common_name="localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tls_dir / "cert.pem"))
    for pem in leaf.cert_chain_pems[1:]:
        pem.write_to_path(str(tls_dir / "cert.pem"), append=True)
    leaf.private_key_pem.write_to_path(str(tls_dir / "key.pem"))
    os.chmod(tls_dir / "key.pem", 0o600)


def build_state(root: Path, ca: trustme.CA, web: dict[str, Any], extra: dict[str, Any]) -> tuple:
    state = root / "state"
    (state / "reports").mkdir(parents=True)
    _write_cert(ca, state / "tls")
    port = free_port()
    config = {
        "hostname": "localhost",
        "state_dir": str(state),
        "web": {"enabled": True, "listen": "127.0.0.1", "port": port, **web},
        **extra,
    }
    config_path = root / "config.toml"
    config_path.write_text(tomli_w.dumps(config))
    mails = root / "mail"
    mails.mkdir()
    (mails / "hostile.eml").write_bytes(web_mails.hostile().data)
    (mails / "private.eml").write_bytes(web_mails.private(1, "bob@example.jp").data)
    with Archive(state) as archive:
        archive.import_path(mails)
        for name, (addr, role) in USERS.items():
            add_user(archive.catalog, UserSpec(name, [addr]))
            set_password(archive.catalog, name, PASSWORD)
            if role != "user":
                set_role(archive.catalog, name, role)
        ids = {
            r["subject"]: r["id"] for r in archive.catalog.query("SELECT id, subject FROM messages")
        }
    return (
        config_path,
        state,
        port,
        {"hostile": ids["hostile html test"], "private": ids["private note 1 of bob@example.jp"]},
    )


def start_server(config_path: Path, log_path: Path, port: int) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb")  # noqa: SIM115 - the child holds it
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "web", "--config", str(config_path), "web", "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    log.close()
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"web server exited: {log_path.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("web server did not listen within 30 s")
            time.sleep(0.05)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
