"""Everything under state_dir is 0640/0750 or stricter, whatever the umask (issue 10
item 6).

Run outside systemd (which sets UMask=0027) with the common umask 022, `proxy-admin
init`, `run` and the ingest it does created the catalog (and its -wal/-shm), the index,
the packs and the directories world-readable: archived mail readable by every local
user. The real console script runs here as a subprocess under umask 022, a message goes
through it into the archive, and then every path under state_dir is checked.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from fixtures.smtp_upstream import wait_until

PROXY_ADMIN = str(Path(sys.executable).with_name("proxy-admin"))
#: no bits for others, no write for the group
FORBIDDEN = 0o027


def umask_022() -> None:
    os.umask(0o022)


def admin(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROXY_ADMIN, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=umask_022,
        stdin=subprocess.DEVNULL,
    )


def loose_paths(root: Path) -> list[str]:
    loose = []
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        if st.st_mode & FORBIDDEN:
            loose.append(f"{path.relative_to(root)} {stat.filemode(st.st_mode)}")
    return loose


def test_state_dir_modes_under_umask_022(smtp_upstream, tmp_path: Path) -> None:
    up = smtp_upstream()
    config = tmp_path / "etc" / "config.toml"
    state = tmp_path / "state"
    config.parent.mkdir()
    assert admin(config, "init", "--state-dir", str(state)).returncode == 0
    renewed = admin(config, "tls", "self-signed", "--hostname", "mx.example.org")
    assert renewed.returncode == 0, renewed.stderr  # rewrites cert.pem and key.pem
    assert loose_paths(state) == []  # before `run` could repair anything
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    added = admin(
        config, "listener", "add", "smtp", "--protocol", "smtp", "--listen", "127.0.0.1",
        "--port", str(port), "--target", f"127.0.0.1:{up.port}",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [PROXY_ADMIN, "--config", str(config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        preexec_fn=umask_022,
    )
    try:
        assert wait_until(lambda: _accepts(port) or proc.poll() is not None, 30)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail("a@example.org", ["b@example.net"], b"Subject: modes\r\n\r\nhi\r\n")
        catalog = state / "archive" / "catalog.sqlite"
        assert wait_until(lambda: _ingested(catalog), 60), (tmp_path / "run.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    assert (state / "archive" / "index").is_dir()
    assert list((state / "archive").glob("catalog.sqlite*"))
    assert loose_paths(state) == []


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _ingested(catalog: Path) -> bool:
    if not catalog.exists():
        return False
    try:
        con = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("select count(*) from messages").fetchone()[0] >= 1
        finally:
            con.close()
    except sqlite3.Error:
        return False


def test_tighten_repairs_an_existing_state_dir_and_keeps_stricter_modes(tmp_path: Path) -> None:
    from admin.filemodes import tighten

    state = tmp_path / "state"
    (state / "archive" / "index").mkdir(parents=True)
    (state / "reports").mkdir()
    (state / "archive" / "catalog.sqlite").write_bytes(b"")
    (state / "archive" / "index" / "meta.json").write_bytes(b"{}")
    secret = state / "archive" / "write.lock"
    secret.write_bytes(b"")
    for path in [state, *state.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    secret.chmod(0o600)
    changed = tighten(state)
    assert loose_paths(state) == []
    assert secret.stat().st_mode & 0o777 == 0o600 and secret not in changed
    assert (state / "archive" / "catalog.sqlite").stat().st_mode & 0o777 == 0o640
    assert (state / "archive" / "index").stat().st_mode & 0o777 == 0o750
