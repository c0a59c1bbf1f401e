"""Load benchmark (issue 7): 1,000 concurrent sessions through one mailtee process.

Prints ONE JSON object on stdout (progress goes to stderr). Everything on loopback:

1. Postfix `smtp-sink` (discards mail) and a real Dovecot (tests/fixtures/dovecot.py,
   `--users` accounts, `--mailbox` messages each with a unique Message-ID). The fixture's
   `dovecot.conf` is extended here (not in the fixture) so Dovecot can hold the load:
   `mail_max_userip_connections`, process/client limits, pop3-login in performance mode.
2. mailtee in its own process (`bench/_common.py serve`, durable archiving into a state
   dir under --state-parent, default /var/tmp) with four listeners: smtp (plain), smtps
   (implicit TLS), pop3 (plain), pop3s (implicit TLS); upstreams are plain.
   `limits.max_connections` = sessions + 100. RLIMIT_NOFILE is raised to its hard limit
   in this process before any child starts, so mailtee, Dovecot and smtp-sink inherit it.
3. One Trio process with `--sessions` tasks (default 1,000: 70 % SMTP, 30 % POP3, half of
   each over TLS), opened over `--ramp` seconds and kept open for `--duration` seconds.
   An SMTP session sends messages (MAIL/RCPT/DATA, unique Message-ID each) with a think
   time of `--think` s on average between them; a POP3 session logs in and RETRs its
   mailbox round-robin (keep: no DELE), with the same think time.
4. While all sessions are open, a probe opens a *new* session every 2 s (SMTP and POP3
   alternately) and times connect -> banner (target: < 1 s).
5. mailtee's VmRSS and open fds (/proc/PID/fd) are sampled every 0.5 s.
6. Afterwards every acknowledged SMTP message (the client saw 250 after DATA) must have
   its `.eml` + `.mpr` pair (matched by Message-ID, outcome "delivered"), and every
   completed RETR (the client saw the final ".") must have its report (matched by
   Message-ID and count).

    .venv/bin/python bench/load.py                          # the issue's figures
    .venv/bin/python bench/load.py --sessions 100 --duration 5   # a smoke run
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import random
import re
import resource
import shutil
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - bench/ is not a package
    REPO,
    emit,
    filesystem_of,
    free_port,
    log,
    machine_info,
    percentile,
    rss_kib,
    start_mailtee,
    start_smtp_sink,
    stop,
    tree_cpu_seconds,
    work_dir,
)

sys.path.insert(0, str(REPO / "tests"))

import trio  # noqa: E402
import trustme  # noqa: E402

from fixtures.dovecot import DovecotServer, start_dovecot  # noqa: E402

HOST = "127.0.0.1"
PASSWORD = "loadpw"
OP_TIMEOUT = 60.0
MSGID = re.compile(rb"^Message-ID: (<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
#: a new session, timed from another interpreter: connect -> first bytes of the banner
PROBE = (
    "import socket, sys, time\n"
    "t = time.perf_counter()\n"
    "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=30)\n"
    "b = s.recv(512)\n"
    "d = time.perf_counter() - t\n"
    "s.sendall(b'QUIT\\r\\n')\n"
    "s.settimeout(5)\n"
    "try:\n    s.recv(512)\nexcept OSError:\n    pass\n"
    "s.close()\n"
    "print(d, b[:4].decode('ascii', 'replace') or 'EOF')\n"
)
TARGETS = {"banner_latency_s_max": 1.0, "errors_max": 0}

# --- Dovecot tuned for many sessions (the fixture's config plus these lines) -------------
DOVECOT_EXTRA = """
default_process_limit = 2000
default_client_limit = 8000
mail_max_userip_connections = 100
service pop3 {
  process_limit = 2000
}
"""
_fixture_config_text = DovecotServer._config_text


def _load_config_text(self: DovecotServer, mechanisms: Any, plaintext_auth: bool) -> str:
    text = _fixture_config_text(self, mechanisms, plaintext_auth)
    login = "service pop3-login {\n"
    tuned = login + "  service_count = 0\n  process_min_avail = 2\n  client_limit = 4000\n"
    return text.replace(login, tuned, 1) + DOVECOT_EXTRA


DovecotServer._config_text = _load_config_text  # type: ignore[method-assign]


def raise_nofile() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def message(msgid: str, size: int, subject: str) -> bytes:
    head = (
        f"From: load@example.org\r\nTo: sink@example.net\r\nSubject: {subject}\r\n"
        f"Message-ID: {msgid}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij.\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


def write_config(path: Path, state: Path, sink_port: int, dovecot_port: int, max_conn: int):
    blocks = []
    for name, proto, tls, target in (
        ("smtp", "smtp", "none", sink_port),
        ("smtps", "smtp", "implicit", sink_port),
        ("pop3", "pop3", "none", dovecot_port),
        ("pop3s", "pop3", "implicit", dovecot_port),
    ):
        blocks.append(
            f'[[listener]]\nname = "{name}"\nprotocol = "{proto}"\nlisten = "{HOST}"\n'
            f'port = 0\nclient_tls = "{tls}"\ntarget_host = "{HOST}"\n'
            f"target_port = {target}\n"
        )
    path.write_text(
        f'hostname = "load.mailtee"\nstate_dir = "{state}"\nlog_level = "info"\n'
        f'on_archive_failure = "reject"\n\n[limits]\nmax_connections = {max_conn}\n'
        f"idle_timeout = 300\nupstream_timeout = 120\n\n" + "\n".join(blocks)
    )


def write_proxy_cert(ca: trustme.CA, state: Path) -> None:
    tls = state / "tls"
    tls.mkdir(parents=True)
    leaf = ca.issue_cert(HOST, "localhost", common_name="localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tls / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tls / "key.pem"))
    (tls / "key.pem").chmod(0o600)


# --- the load client ---------------------------------------------------------------------


class Proto(Exception):
    """An unexpected reply (counted as an error)."""


class Conn:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    @classmethod
    async def open(cls, port: int, ctx: ssl.SSLContext | None) -> Conn:
        stream: trio.abc.Stream = await trio.open_tcp_stream(HOST, port)
        if ctx is not None:
            stream = trio.SSLStream(stream, ctx, server_hostname="localhost")
            await stream.do_handshake()
        return cls(stream)

    async def line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[: i + 2])
                del self.buf[: i + 2]
                return out
            data = await self.stream.receive_some(65536)
            if not data:
                raise Proto(f"connection closed (buffer {bytes(self.buf[:80])!r})")
            self.buf += data

    async def smtp_reply(self) -> bytes:
        while True:
            line = await self.line()
            if line[3:4] != b"-":
                return line

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def until_dot(self) -> bytes:
        """A POP3 multi-line body up to (not including) the final dot line."""
        while True:
            i = self.buf.find(b"\r\n.\r\n")
            if i >= 0:
                out = bytes(self.buf[: i + 2])
                del self.buf[: i + 5]
                return out
            if self.buf.startswith(b".\r\n"):  # an empty message
                del self.buf[:3]
                return b""
            data = await self.stream.receive_some(65536)
            if not data:
                raise Proto("connection closed inside RETR")
            self.buf += data

    async def close(self) -> None:
        await trio.aclose_forcefully(self.stream)


class Load:
    def __init__(self, args: argparse.Namespace, ports: dict[str, int], ctx: ssl.SSLContext):
        self.args = args
        self.ports = ports
        self.ctx = ctx
        self.rng = random.Random(args.seed)
        self.run_id = f"{int(time.time())}"
        self.open_now = 0
        self.open_peak = 0
        self.established = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.error_samples: list[str] = []
        self.smtp_acked: list[str] = []
        self.smtp_latency: list[float] = []
        self.smtp_done_at: list[float] = []
        self.retr_ids: list[str] = []
        self.retr_latency: list[float] = []
        self.retr_done_at: list[float] = []
        self.connect_latency: list[float] = []
        self.probes: list[dict[str, Any]] = []
        self.stop_at = math.inf  # set once every session is open
        self.window_start = 0.0
        self.all_open_after = math.nan

    def error(self, where: str, e: BaseException) -> None:
        key = f"{where}: {type(e).__name__}"
        self.errors[key] += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{key}: {e}"[:200])

    async def think(self) -> None:
        t = self.args.think
        await trio.sleep(self.rng.uniform(0.5 * t, 1.5 * t))

    async def smtp_session(self, sid: int, tls: bool) -> None:
        port = self.ports["smtps" if tls else "smtp"]
        t0 = trio.current_time()
        conn = None
        counted = False
        try:
            with trio.fail_after(OP_TIMEOUT):
                conn = await Conn.open(port, self.ctx if tls else None)
                banner = await conn.smtp_reply()
                if not banner.startswith(b"220"):
                    raise Proto(f"banner {banner!r}")
                self.connect_latency.append(trio.current_time() - t0)
                await conn.send(b"EHLO load.client\r\n")
                if not (await conn.smtp_reply()).startswith(b"250"):
                    raise Proto("EHLO")
            self.established += 1
            counted = True
            self.open_now += 1
            self.open_peak = max(self.open_peak, self.open_now)
            n = 0
            while trio.current_time() < self.stop_at:
                await self.think()
                if trio.current_time() >= self.stop_at:
                    break
                n += 1
                msgid = f"<smtp-{self.run_id}-{sid}-{n}@load.bench>"
                data = message(msgid, self.args.size, f"load {sid}/{n}")
                t1 = trio.current_time()
                with trio.fail_after(OP_TIMEOUT):
                    for cmd, want in (
                        (b"MAIL FROM:<load@example.org>\r\n", b"250"),
                        (b"RCPT TO:<sink@example.net>\r\n", b"250"),
                        (b"DATA\r\n", b"354"),
                    ):
                        await conn.send(cmd)
                        r = await conn.smtp_reply()
                        if not r.startswith(want):
                            raise Proto(f"{cmd.strip()!r} -> {r!r}")
                    await conn.send(data + b".\r\n")
                    r = await conn.smtp_reply()
                    if not r.startswith(b"250"):
                        raise Proto(f"end of data -> {r!r}")
                done = trio.current_time()
                self.smtp_acked.append(msgid)
                self.smtp_latency.append(done - t1)
                self.smtp_done_at.append(done)
            with trio.move_on_after(10):
                await conn.send(b"QUIT\r\n")
                await conn.smtp_reply()
        except (Proto, trio.TooSlowError, trio.BrokenResourceError, OSError, ssl.SSLError) as e:
            self.error("smtps" if tls else "smtp", e)
        finally:
            if counted:
                self.open_now -= 1
            if conn is not None:
                await conn.close()

    async def pop3_session(self, sid: int, tls: bool) -> None:
        port = self.ports["pop3s" if tls else "pop3"]
        user = f"u{sid % self.args.users}"
        t0 = trio.current_time()
        conn = None
        counted = False
        try:
            with trio.fail_after(OP_TIMEOUT):
                conn = await Conn.open(port, self.ctx if tls else None)
                banner = await conn.line()
                if not banner.startswith(b"+OK"):
                    raise Proto(f"banner {banner!r}")
                self.connect_latency.append(trio.current_time() - t0)
                for cmd in (f"USER {user}\r\n", f"PASS {PASSWORD}\r\n"):
                    await conn.send(cmd.encode())
                    r = await conn.line()
                    if not r.startswith(b"+OK"):
                        raise Proto(f"{cmd.split()[0]} -> {r!r}")
            self.established += 1
            counted = True
            self.open_now += 1
            self.open_peak = max(self.open_peak, self.open_now)
            k = self.rng.randrange(self.args.mailbox)
            while trio.current_time() < self.stop_at:
                await self.think()
                if trio.current_time() >= self.stop_at:
                    break
                msg = k % self.args.mailbox + 1
                k += 1
                t1 = trio.current_time()
                with trio.fail_after(OP_TIMEOUT):
                    await conn.send(b"RETR %d\r\n" % msg)
                    r = await conn.line()
                    if not r.startswith(b"+OK"):
                        raise Proto(f"RETR {msg} -> {r!r}")
                    body = await conn.until_dot()
                done = trio.current_time()
                m = MSGID.search(body)
                if m is None:
                    raise Proto(f"RETR {msg}: no Message-ID")
                self.retr_ids.append(m.group(1).decode())
                self.retr_latency.append(done - t1)
                self.retr_done_at.append(done)
            with trio.move_on_after(10):
                await conn.send(b"QUIT\r\n")
                await conn.line()
        except (Proto, trio.TooSlowError, trio.BrokenResourceError, OSError, ssl.SSLError) as e:
            self.error("pop3s" if tls else "pop3", e)
        finally:
            if counted:
                self.open_now -= 1
            if conn is not None:
                await conn.close()

    async def probe(self, proto: str) -> None:
        """A new session from another process (this one is busy with the load)."""
        entry: dict[str, Any] = {"protocol": proto, "open_sessions": self.open_now}
        try:
            with trio.fail_after(40):
                proc = await trio.run_process(
                    [sys.executable, "-c", PROBE, str(self.ports[proto])],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            if proc.returncode != 0:
                entry["error"] = proc.stderr.decode("utf-8", "replace").strip()[-200:]
            else:
                seconds, banner = proc.stdout.decode().split(maxsplit=1)
                entry["banner_s"] = round(float(seconds), 4)
                entry["banner"] = banner.strip()
        except (trio.TooSlowError, OSError, ValueError) as e:
            entry["error"] = f"{type(e).__name__}: {e}"[:200]
        self.probes.append(entry)

    async def main(self) -> None:
        a = self.args
        n_pop3 = round(a.sessions * a.pop3_share)
        kinds = [("pop3", i) for i in range(n_pop3)] + [
            ("smtp", i) for i in range(a.sessions - n_pop3)
        ]
        self.rng.shuffle(kinds)
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i, (kind, sid) in enumerate(kinds):
                tls = sid % 2 == 1
                fn = self.pop3_session if kind == "pop3" else self.smtp_session
                nursery.start_soon(fn, sid, tls)
                await trio.sleep_until(t0 + a.ramp * (i + 1) / len(kinds))
            # The measured window starts once every session is open (or failed; at most
            # 60 s after the ramp), and lasts --duration seconds.
            with trio.move_on_after(60):
                while self.open_now + sum(self.errors.values()) < a.sessions:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            self.window_start = trio.current_time()
            self.all_open_after = self.window_start - t0
            self.stop_at = self.window_start + a.duration
            # Probes while the sessions are open: every 2 s, SMTP and POP3 alternately.
            i = 0
            while trio.current_time() < self.stop_at - 2 and i < 40:
                await self.probe("smtp" if i % 2 == 0 else "pop3")
                i += 1
                await trio.sleep(2)
        self.wall = trio.current_time() - t0


# --- verification --------------------------------------------------------------------------


def scan_reports(reports: Path) -> dict[str, Any]:
    import json

    smtp: dict[str, str] = {}
    pop3: collections.Counter[str] = collections.Counter()
    tmp_left = 0
    bad = 0
    for p in reports.iterdir():
        if p.name.startswith("."):
            tmp_left += 1
            continue
        if p.suffix != ".mpr":
            continue
        rep = json.loads(p.read_text("utf-8"))
        eml = p.with_suffix(".eml")
        try:
            with open(eml, "rb") as f:
                head = f.read(4096)
        except OSError:
            bad += 1
            continue
        m = MSGID.search(head)
        if m is None:
            bad += 1
            continue
        msgid = m.group(1).decode()
        if rep["protocol"] == "smtp":
            smtp[msgid] = rep["upstream"]["outcome"]
        else:
            pop3[msgid] += 1
    return {"smtp": smtp, "pop3": pop3, "tmp_left": tmp_left, "unreadable": bad}


class ProcSampler:
    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
                self.samples.append((time.monotonic(), rss_kib(self.pid), fds))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rate(done_at: list[float], start: float, end: float) -> float:
    n = sum(1 for t in done_at if start <= t < end)
    return round(n / (end - start), 1) if end > start else 0.0


def lat(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 1),
        "p99_ms": round(percentile(values, 99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - one linear script
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--pop3-share", type=float, default=0.3, help="fraction of POP3 sessions")
    p.add_argument("--duration", type=float, default=30.0, help="seconds all sessions stay open")
    p.add_argument("--ramp", type=float, default=5.0, help="seconds to open all sessions")
    p.add_argument("--think", type=float, default=1.0, help="mean seconds between messages")
    p.add_argument("--size", type=int, default=4000, help="bytes per message")
    p.add_argument("--users", type=int, default=100, help="Dovecot accounts")
    p.add_argument("--mailbox", type=int, default=5, help="messages per account")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--state-parent", type=Path, default=Path("/var/tmp"))
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)

    nofile = raise_nofile()
    need = 3 * args.sessions + 200
    if nofile[0] < need:
        raise SystemExit(f"RLIMIT_NOFILE {nofile[0]} < {need}: raise the hard limit first")
    work = work_dir(args.state_parent, "mailtee-load-")
    state = work / "state"
    (state / "reports").mkdir(parents=True)
    result: dict[str, Any] = {
        "benchmark": "load",
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            **machine_info(),
            "state_dir_filesystem": filesystem_of(state),
            "rlimit_nofile": nofile[0],
        },
        "targets": TARGETS,
    }
    ca = trustme.CA(organization_name="mailtee load bench")
    ca_file = work / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ctx = ssl.create_default_context(cafile=str(ca_file))
    sink = proxy = None
    users = {f"u{i}": PASSWORD for i in range(args.users)}
    try:
        sink_port = free_port()
        sink = start_smtp_sink(sink_port, backlog=4096)
        with start_dovecot(users=users) as dovecot:
            for u in users:
                for k in range(1, args.mailbox + 1):
                    msgid = f"<pop-{u}-{k}@load.bench>"
                    dovecot.deliver(u, message(msgid, args.size, f"mailbox {u}/{k}"))
            write_proxy_cert(ca, state)
            config = work / "config.toml"
            max_conn = args.sessions + 100
            write_config(config, state, sink_port, dovecot.port, max_conn)
            proxy, ports = start_mailtee(config, work)
            pid = proxy.pid
            result["mailtee"] = {"max_connections": max_conn, "pid_nofile": _nofile(pid)}
            log(f"sink :{sink_port}, dovecot :{dovecot.port}, mailtee {ports} (pid {pid})")
            rss0 = rss_kib(pid)
            cpu0 = tree_cpu_seconds(pid)
            load = Load(args, ports, ctx)
            log(f"{args.sessions} sessions, ramp {args.ramp}s, {args.duration}s open")
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            with ProcSampler(pid) as sampler:
                trio.run(load.main)
            cpu1 = tree_cpu_seconds(pid)
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            client_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
            log("load done; checking reports")
            time.sleep(1.0)
            reports = scan_reports(state / "reports")
            result["dovecot_log_errors"] = [
                ln for ln in dovecot.log_text().splitlines() if "Error" in ln or "Fatal" in ln
            ][:5]
    finally:
        stop(proxy)
        stop(sink)

    start = load.window_start  # steady window: all sessions open
    end = load.stop_at
    acked = load.smtp_acked
    missing_smtp = [m for m in acked if m not in reports["smtp"]]
    not_delivered = [m for m in acked if reports["smtp"].get(m, "delivered") != "delivered"]
    retr = collections.Counter(load.retr_ids)
    missing_pop3 = {m: n - reports["pop3"][m] for m, n in retr.items() if reports["pop3"][m] < n}
    plateau = [s for s in sampler.samples if s[0] >= 0] or [(0, 0, 0)]
    probes_ok = [pr["banner_s"] for pr in load.probes if "banner_s" in pr]
    n_pop3 = round(args.sessions * args.pop3_share)
    result["sessions"] = {
        "requested": args.sessions,
        "smtp": args.sessions - n_pop3,
        "pop3": n_pop3,
        "tls_share": 0.5,
        "established": load.established,
        "open_peak": load.open_peak,
        "all_open_after_s": round(load.all_open_after, 2),
        "connect_to_banner": lat(load.connect_latency),
    }
    result["throughput"] = {
        "wall_s": round(load.wall, 2),
        "note": "rates count completions in the window when all sessions were open",
        "steady_window_s": args.duration,
        "smtp_msgs_per_s": rate(load.smtp_done_at, start, end),
        "pop3_retr_per_s": rate(load.retr_done_at, start, end),
        "total_per_s": round(
            rate(load.smtp_done_at, start, end) + rate(load.retr_done_at, start, end), 1
        ),
        "smtp_acked": len(acked),
        "pop3_retr_completed": len(load.retr_ids),
    }
    result["latency"] = {
        "smtp_transaction": lat(load.smtp_latency),
        "pop3_retr": lat(load.retr_latency),
    }
    result["errors"] = {
        "total": sum(load.errors.values()),
        "by_kind": dict(load.errors),
        "samples": load.error_samples,
    }
    result["new_session_banner_under_load"] = {
        "probes": len(load.probes),
        "failed": len(load.probes) - len(probes_ok),
        "median_s": round(sorted(probes_ok)[len(probes_ok) // 2], 4) if probes_ok else None,
        "max_s": round(max(probes_ok), 4) if probes_ok else None,
        "detail": load.probes,
    }
    result["mailtee_process"] = {
        "rss_before_mb": round(rss0 / 1024, 1),
        "rss_peak_mb": round(max(s[1] for s in plateau) / 1024, 1),
        "open_fds_peak": max(s[2] for s in plateau),
        "open_fds_samples": len(plateau),
        "cpu_s": round(cpu1 - cpu0, 1),
        "cpu_share_of_one_core": round((cpu1 - cpu0) / load.wall, 2),
    }
    result["load_client_process"] = {
        "cpu_s": round(client_cpu, 1),
        "cpu_share_of_one_core": round(client_cpu / load.wall, 2),
    }
    result["archive_check"] = {
        "smtp_reports": len(reports["smtp"]),
        "smtp_acked_without_report": len(missing_smtp),
        "smtp_acked_not_delivered": len(not_delivered),
        "pop3_reports": sum(reports["pop3"].values()),
        "pop3_retr_without_report": sum(missing_pop3.values()),
        "tmp_files_left": reports["tmp_left"],
        "unreadable": reports["unreadable"],
        "missing_examples": (missing_smtp + list(missing_pop3))[:5],
    }
    check = result["archive_check"]
    banner = result["new_session_banner_under_load"]
    result["pass"] = {
        "every_ack_archived": check["smtp_acked_without_report"] == 0
        and check["smtp_acked_not_delivered"] == 0
        and check["pop3_retr_without_report"] == 0,
        "all_sessions_established": load.established == args.sessions,
        "banner_under_1s": bool(probes_ok)
        and banner["failed"] == 0
        and banner["max_s"] <= TARGETS["banner_latency_s_max"],
        "no_errors": result["errors"]["total"] == 0,
    }
    result["all_pass"] = all(result["pass"].values())
    emit(result)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"kept {work}")
    return 0 if result["pass"]["every_ack_archived"] else 1


def _nofile(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


if __name__ == "__main__":
    raise SystemExit(main())
