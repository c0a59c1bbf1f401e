"""Worker processes with group commit (issue 12): kill -9 loses nothing acknowledged,
`status` covers every worker, SIGHUP reaches all, a dead worker is restarted and its
spool area recovered.

The service runs as `proxy-admin run` with `workers = 2` (a real kill -9 needs a real
process). Clients: 10 SMTP threads (aiosmtpd upstream) and 10 POP3 threads (real
Dovecot), 20 sessions at once. A client counts a message as acknowledged when it saw
the `250` after DATA (SMTP) or the terminating `.` of RETR (POP3).
"""

from __future__ import annotations

import hashlib
import json
import os
import poplib
import signal
import smtplib
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_kill_restart import PROXY_ADMIN, catalog_hashes, free_port, message

from admin.config import Config, ListenerConfig, save_config
from archive.commit import encode_record
from fixtures.dovecot import start_dovecot
from fixtures.smtp_upstream import wait_until
from proxy import control

pytestmark = pytest.mark.e2e

SMTP_THREADS = 10
POP3_THREADS = 10
POP3_MESSAGES = 20  # per POP3 user
ACKS_BEFORE_KILL = 30  # of each protocol


def status(state: Path) -> dict | None:
    try:
        reply = control.request(control.socket_path(state), "status", timeout=5)
    except (OSError, control.ControlError):
        return None
    return reply.get("status") if reply.get("ok") else None


def worker_pids(state: Path) -> list[int]:
    st = status(state) or {}
    return [w["pid"] for w in st.get("workers", []) if w.get("alive")]


def start(config_path: Path, state: Path, log: Path, workers: int) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [PROXY_ADMIN, "--config", str(config_path), "run"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    ok = wait_until(lambda: proc.poll() is not None or len(worker_pids(state)) == workers, 60)
    if not ok or proc.poll() is not None:
        proc.kill()
        raise AssertionError(f"service did not start: {log.read_text()}")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Load:
    stop: threading.Event = field(default_factory=threading.Event)
    smtp_acked: list[bytes] = field(default_factory=list)
    pop3_acked: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def smtp(self, port: int, thread: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            data = message(thread, n)
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                    s.sendmail(f"load{thread}@example.org", ["sink@example.net"], data)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.01)
                continue
            with self.lock:
                self.smtp_acked.append(data)

    def pop3(self, port: int, user: str) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                p = poplib.POP3("127.0.0.1", port, timeout=10)
                try:
                    p.user(user)
                    p.pass_("secret")
                    for _ in range(5):
                        n = n % POP3_MESSAGES + 1
                        _resp, lines, _octets = p.retr(n)
                        data = b"".join(line + b"\r\n" for line in lines)
                        with self.lock:
                            self.pop3_acked.append(data)  # the client saw the final "."
                    p.quit()
                finally:
                    p.close()
            except (OSError, poplib.error_proto):
                time.sleep(0.01)


def _config(state: Path, smtp_port: int, pop3_port: int, up_port: int, dovecot_port: int):
    return Config(
        hostname="mailtee.test",
        state_dir=str(state),
        workers=2,
        report_retention="1h",
        listener=[
            ListenerConfig(
                name="smtp",
                protocol="smtp",
                listen="127.0.0.1",
                port=smtp_port,
                target_host="127.0.0.1",
                target_port=up_port,
            ),
            ListenerConfig(
                name="pop3",
                protocol="pop3",
                listen="127.0.0.1",
                port=pop3_port,
                target_host="127.0.0.1",
                target_port=dovecot_port,
            ),
        ],
    )


def _kill_all(proc: subprocess.Popen[bytes], state: Path) -> None:
    pids = worker_pids(state)
    proc.send_signal(signal.SIGKILL)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    assert wait_until(lambda: not any(_alive(p) for p in pids), 10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split()[2] != "Z"
    except OSError:
        return False


# smtplib/poplib leak their socket when the server dies during the greeting (the kill)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    ("smtp_threads", "pop3_threads"),
    [(SMTP_THREADS, POP3_THREADS), (0, 1)],
    # one POP3 session alone in its worker: its commits take the inline barrier
    ids=["20-sessions", "1-pop3-session"],
)
def test_kill9_of_the_service_under_20_sessions_loses_no_ack(
    smtp_upstream, tmp_path, smtp_threads, pop3_threads
):
    up = smtp_upstream()
    users = {f"u{i}": "secret" for i in range(pop3_threads)}
    with start_dovecot(users=users) as dovecot:
        served = {}
        for user in users:
            for i in range(POP3_MESSAGES):
                body = b"".join(
                    b"%s message %d line %d\r\n" % (user.encode(), i, k) for k in range(60)
                )
                msg = b"From: a@example.org\r\nSubject: %d\r\n\r\n" % i + body
                served[hashlib.sha256(dovecot.deliver(user, msg)).hexdigest()] = user
        state = tmp_path / "state"
        config_path = tmp_path / "config.toml"
        smtp_port, pop3_port = free_port(), free_port()
        save_config(_config(state, smtp_port, pop3_port, up.port, dovecot.port), config_path)
        log = tmp_path / "service.log"
        proc = start(config_path, state, log, 2)
        load = Load()
        threads = [
            threading.Thread(target=load.smtp, args=(smtp_port, i), daemon=True)
            for i in range(smtp_threads)
        ] + [threading.Thread(target=load.pop3, args=(pop3_port, u), daemon=True) for u in users]
        pairs = ((load.smtp_acked, smtp_threads), (load.pop3_acked, pop3_threads))
        kinds = [acked for acked, n in pairs if n]  # the kinds of session that run
        try:
            for t in threads:
                t.start()
            assert wait_until(lambda: min(len(k) for k in kinds) >= ACKS_BEFORE_KILL, 60), (
                log.read_text()
            )
            if not smtp_threads:  # the lone session's commits really ran on the loop
                workers = (status(state) or {}).get("workers", [])
                assert sum((w.get("commit") or {}).get("inline_batches", 0) for w in workers)
            _kill_all(proc, state)
        finally:
            load.stop.set()
            for t in threads:
                t.join(15)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        smtp_acked, pop3_acked = list(load.smtp_acked), list(load.pop3_acked)
        reports = state / "reports"
        proc = start(config_path, state, log, 2)
        try:
            names = {p.name for p in reports.iterdir()}
            assert not any(n.startswith(".") for n in names), names
            emls = {n[:-4] for n in names if n.endswith(".eml")}
            mprs = {n[:-4] for n in names if n.endswith(".mpr")}
            assert emls == mprs  # journals replayed, orphans removed: pairs only
            by_sha: dict[str, dict] = {}
            for stem in mprs:
                doc = json.loads((reports / f"{stem}.mpr").read_text("utf-8"))
                eml = (reports / f"{stem}.eml").read_bytes()
                assert doc["sha256"] == hashlib.sha256(eml).hexdigest()
                by_sha[doc["sha256"]] = doc
            for data in smtp_acked:
                doc = by_sha.get(hashlib.sha256(data).hexdigest())
                assert doc is not None, f"acknowledged SMTP message lost: {data[:60]!r}"
                assert doc["upstream"]["outcome"] in ("delivered", "pending")
            for data in pop3_acked:
                sha = hashlib.sha256(data).hexdigest()
                assert sha in served  # the client got exactly what Dovecot serves
                assert sha in by_sha, f"acknowledged RETR lost: {data[:60]!r}"
                assert by_sha[sha]["pop3"]["user"] == served[sha]
            want = {hashlib.sha256(d).hexdigest() for d in smtp_acked + pop3_acked}
            assert wait_until(lambda: want <= catalog_hashes(state), 60), log.read_text()
        finally:
            stop(proc)


def _hold_sessions_on_every_worker(port: int, state: Path) -> list[socket.socket]:
    socks: list[socket.socket] = []
    for _ in range(64):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.recv(512)  # the greeting: the session is established in some worker
        socks.append(s)
        st = status(state) or {}
        if len(socks) >= 4 and all(w["active_sessions"] > 0 for w in st.get("workers", [])):
            return socks
    raise AssertionError("connections never reached both workers")


def test_status_reload_and_restart_cover_every_worker(smtp_upstream, tmp_path):
    up = smtp_upstream()
    state = tmp_path / "state"
    config_path = tmp_path / "config.toml"
    port = free_port()
    config = _config(state, port, free_port(), up.port, 9)
    config.listener = config.listener[:1]
    save_config(config, config_path)
    log = tmp_path / "service.log"
    proc = start(config_path, state, log, 2)
    socks: list[socket.socket] = []
    try:
        socks = _hold_sessions_on_every_worker(port, state)
        st = status(state)
        assert st is not None
        assert [w["worker"] for w in st["workers"]] == [0, 1]
        assert st["active_sessions"] == len(socks)
        assert sum(w["sessions"]["smtp"] for w in st["workers"]) == len(socks)
        assert st["listeners"][0]["accepting_workers"] == 2
        out = subprocess.run(
            [PROXY_ADMIN, "--config", str(config_path), "status"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        for w in st["workers"]:
            line = next(
                x for x in out.splitlines() if x.strip().startswith(f"worker {w['worker']}")
            )
            assert f"pid {w['pid']}" in line and f"{w['active_sessions']} session(s)" in line
        assert "removed 1h after they are archived" in out

        # SIGHUP reaches every worker: a new listener is served by both
        port2 = free_port()
        config.listener.append(
            ListenerConfig(
                name="smtp2",
                protocol="smtp",
                listen="127.0.0.1",
                port=port2,
                target_host="127.0.0.1",
                target_port=up.port,
            )
        )
        save_config(config, config_path)
        proc.send_signal(signal.SIGHUP)

        def reloaded() -> bool:
            s = status(state) or {}
            ls = {x["name"]: x for x in s.get("listeners", [])}
            return all(w.get("reloads") == 1 for w in s.get("workers", [])) and (
                ls.get("smtp2", {}).get("accepting_workers") == 2
            )

        assert wait_until(reloaded, 30), log.read_text()
        for s in socks:  # sessions in flight survived the reload
            s.sendall(b"NOOP\r\n")
            assert s.recv(512).startswith(b"250")
        with smtplib.SMTP("127.0.0.1", port2, timeout=10) as c:
            c.sendmail("a@example.org", ["b@example.net"], b"Subject: via smtp2\r\n\r\nx\r\n")

        # a journalled message of worker 0 whose report was never written (planted)
        area = state / "spool" / "w0"
        area.mkdir(parents=True, exist_ok=True)
        raw = b"Subject: in the journal only\r\n\r\nbody\r\n"
        stem = "20261201T000000Z-smtp-22222222-2222-4222-8222-222222222222"
        doc = {
            "format": "mailtee-mpr",
            "version": 1,
            "id": stem[-36:],
            "protocol": "smtp",
            "size": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "upstream": {"outcome": "pending", "reply": None},
        }
        (area / "journal-99999999.log").write_bytes(encode_record(stem, doc, raw))

        # kill -9 worker 0: restarted, spool area recovered, worker 1 untouched
        before = {w["worker"]: w["pid"] for w in st["workers"]}
        os.kill(before[0], signal.SIGKILL)

        def restarted() -> bool:
            s = status(state) or {}
            w = {x["worker"]: x for x in s.get("workers", [])}
            return (
                w.get(0, {}).get("pid") not in (None, before[0])
                and w[0].get("answering")
                and w[0]["restarts"] == 1
            )

        assert wait_until(restarted, 30), log.read_text()
        s = status(state)
        assert s["workers"][1]["pid"] == before[1] and s["workers"][1]["restarts"] == 0
        mpr = state / "reports" / f"{stem}.mpr"
        assert mpr.exists() and json.loads(mpr.read_text())["upstream"]["outcome"] == "pending"
        assert (state / "reports" / f"{stem}.eml").read_bytes() == raw  # from the journal
        assert not (area / "journal-99999999.log").exists()
        assert "worker 0" in log.read_text() and "restarting" in log.read_text()
    finally:
        for s in socks:
            s.close()
        stop(proc)
    assert proc.returncode == 0, log.read_text()


def _start_smtp_only(up, tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """`proxy-admin run` with 2 workers and only an SMTP listener (on `port`, relaying to
    `up`); state in tmp_path/state, stderr in tmp_path/service.log."""
    state, config_path = tmp_path / "state", tmp_path / "config.toml"
    config = _config(state, port, free_port(), up.port, 9)
    config.listener = config.listener[:1]
    save_config(config, config_path)
    return start(config_path, state, tmp_path / "service.log", 2)


def test_workers_stop_when_the_supervisor_dies(smtp_upstream, tmp_path):
    """No orphan keeps serving (or holding the ports) after a kill -9 of the main process."""
    state, log, port = tmp_path / "state", tmp_path / "service.log", free_port()
    proc = _start_smtp_only(smtp_upstream(), tmp_path, port)
    pids = worker_pids(state)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_until(lambda: not any(_alive(p) for p in pids), 30), log.read_text()
    assert wait_until(lambda: _port_free(port), 10)  # the port is free again


def _port_free(port: int) -> bool:
    """Can a new socket bind the port? (The last worker's exit may take a moment to
    release it after its pid is gone.)"""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_sigterm_to_every_process_stops_cleanly(smtp_upstream, tmp_path):
    """systemd stops a unit by signalling its whole control group at once."""
    state, log = tmp_path / "state", tmp_path / "service.log"
    proc = _start_smtp_only(smtp_upstream(), tmp_path, free_port())
    pids = worker_pids(state)
    for pid in [proc.pid, *pids]:
        os.kill(pid, signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()
    assert wait_until(lambda: not any(_alive(p) for p in pids), 10)
    assert "restarting" not in log.read_text()
