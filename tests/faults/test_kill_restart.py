"""SIGKILL of the real service (`proxy-admin run`) under load, then a restart: zero loss.

The proxy runs as a subprocess so that the kill is a real `kill -9`: no `finally`, no
flush, whatever the kernel has is what is on disk. Clients in threads keep sending one
message per session (many messages in flight at the moment of the kill). Afterwards:
- every message a client saw `250` for has its `.eml` (exact bytes) and a complete,
  parseable `.mpr`, and was delivered upstream;
- nothing half-written survives the restart (temp files and `.eml` without `.mpr` are
  removed by `Spool.cleanup_orphans`, which `run_service` calls at start);
- the restarted service's ingest puts every acknowledged message into the archive.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from admin.config import Config, ListenerConfig, save_config
from fixtures.net import free_port
from fixtures.smtp_upstream import wait_until

PROXY_ADMIN = str(Path(sys.executable).with_name("proxy-admin"))
THREADS = 6
#: acknowledged messages to see before the kill (the kill lands mid-load, not after it)
ACKS_BEFORE_KILL = 40


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.recv(100)  # the greeting (or a refusal); either way the service is up
        return True
    except OSError:
        return False


def message(thread: int, n: int) -> bytes:
    body = b"".join(b"line %d of message %d/%d\r\n" % (i, thread, n) for i in range(200))
    return (
        b"From: load%d@example.org\r\nTo: sink@example.net\r\n"
        b"Message-ID: <%d.%d@load.test>\r\nSubject: load %d/%d\r\n\r\n"
        % (thread, thread, n, thread, n)
    ) + body


@dataclass
class Load:
    stop: threading.Event = field(default_factory=threading.Event)
    acked: list[bytes] = field(default_factory=list)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, port: int, thread: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            data = message(thread, n)
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                    s.ehlo("load.test")
                    s.sendmail(f"load{thread}@example.org", ["sink@example.net"], data)
            except (OSError, smtplib.SMTPException):
                with self.lock:
                    self.refused += 1
                time.sleep(0.01)
                continue
            with self.lock:
                self.acked.append(data)  # sendmail returned: the client saw 250


def start_service(config_path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [PROXY_ADMIN, "--config", str(config_path), "run"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    if not wait_until(lambda: listening(port) or proc.poll() is not None, 20):
        proc.kill()
        raise AssertionError(f"service did not start: {log.read_text()}")
    assert proc.poll() is None, log.read_text()
    return proc


def catalog_hashes(state_dir: Path) -> set[str]:
    db = state_dir / "archive" / "catalog.sqlite"
    if not db.exists():
        return set()
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return {r[0] for r in con.execute("select sha256 from messages")}
        finally:
            con.close()
    except sqlite3.Error:  # schema not created yet, or busy: look again
        return set()


@pytest.mark.parametrize(
    "clients",
    [THREADS, 1],
    ids=["6-clients", "1-client"],  # 1 client: its commits take the inline barrier
)
def test_sigkill_mid_load_then_restart_loses_nothing(smtp_upstream, tmp_path, clients):
    up = smtp_upstream()
    port = free_port()
    state = tmp_path / "state"
    config_path = tmp_path / "config.toml"
    save_config(
        Config(
            hostname="mailtee.test",
            state_dir=str(state),
            listener=[
                ListenerConfig(
                    name="smtp",
                    protocol="smtp",
                    listen="127.0.0.1",
                    port=port,
                    target_host="127.0.0.1",
                    target_port=up.port,
                )
            ],
        ),
        config_path,
    )
    log = tmp_path / "service.log"
    proc = start_service(config_path, port, log)
    load = Load()
    threads = [
        threading.Thread(target=load.client, args=(port, i), daemon=True) for i in range(clients)
    ]
    try:
        for t in threads:
            t.start()
        assert wait_until(lambda: len(load.acked) >= ACKS_BEFORE_KILL, 30), log.read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        load.stop.set()
        for t in threads:
            t.join(15)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    acked = list(load.acked)
    assert len(acked) >= ACKS_BEFORE_KILL
    reports = state / "reports"

    # A report is never half-written, even before the restart: every visible `.mpr`
    # is complete JSON and names the bytes of its `.eml` (which may be absent only if
    # its writer was killed before the `.mpr`; see cleanup below).
    for mpr in reports.glob("*.mpr"):
        doc = json.loads(mpr.read_text("utf-8"))
        eml = mpr.with_suffix(".eml").read_bytes()
        assert doc["sha256"] == hashlib.sha256(eml).hexdigest()
        assert doc["size"] == len(eml)

    # Orphans the kill may or may not have left, planted so cleanup is always exercised.
    stem = "20261126T000000Z-smtp-00000000-0000-4000-8000-000000000000"
    planted = [
        reports / f".{stem}.eml.tmp",
        reports / f"{stem}.eml",  # renamed, but killed before its .mpr was durable
        reports / ".20261126T000000Z-smtp-11111111-1111-4111-8111-111111111111.mpr.tmp",
    ]
    for p in planted:
        p.write_bytes(b"Subject: half\r\n")

    up_before = len(up.messages)
    proc = start_service(config_path, port, log)
    try:
        names = {p.name for p in reports.iterdir()}
        assert not any(n.startswith(".") for n in names), names
        emls = {n[:-4] for n in names if n.endswith(".eml")}
        mprs = {n[:-4] for n in names if n.endswith(".mpr")}
        assert emls == mprs  # pairs only: no orphan survived the start

        by_sha = {}
        for stem_ in mprs:
            doc = json.loads((reports / f"{stem_}.mpr").read_text("utf-8"))
            eml = (reports / f"{stem_}.eml").read_bytes()
            assert doc["sha256"] == hashlib.sha256(eml).hexdigest()
            by_sha[doc["sha256"]] = (doc, eml)
        for data in acked:
            sha = hashlib.sha256(data).hexdigest()
            assert sha in by_sha, f"acknowledged message lost: {data[:80]!r}"
            doc, eml = by_sha[sha]
            assert eml == data
            # 250 reached the client before the outcome rewrite; a kill in between
            # leaves the durable "pending" report, never anything else.
            assert doc["upstream"]["outcome"] in ("delivered", "pending")
        delivered = {t.content for t in up.messages}
        assert up_before == len(up.messages)
        assert all(d in delivered for d in acked)

        want = {hashlib.sha256(d).hexdigest() for d in acked}
        assert wait_until(lambda: want <= catalog_hashes(state), 30), log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert os.path.exists(state / "archive" / "catalog.sqlite")


pytestmark = pytest.mark.e2e
