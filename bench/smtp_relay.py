"""SMTP relay benchmark (issue 3): Postfix smtp-source -> smtp-sink, directly and via mailtee.

Prints ONE JSON object on stdout (progress goes to stderr). Everything runs in one
invocation on loopback so the ratios compare like with like on a noisy machine:

1. `smtp-sink` (no dump file) on a free port.
2. Warm-up, then a big message (`--big-mb` MB, 1 MB = 10^6 bytes) through mailtee from a
   raw-socket client that streams it, while the mailtee process' VmRSS is sampled every
   50 ms from /proc. The `.eml` size and `.mpr` outcome are checked.
3. Per-command latency: a raw-socket client runs EHLO/MAIL/RCPT/RSET/NOOP round trips,
   interleaving a direct connection to the sink and one through mailtee; the added
   latency is p50(mailtee) - p50(direct) (and the same for p99).
4. `--rounds` x (direct smtp-source run, then the same run through mailtee):
   `smtp-source -s SESSIONS -m MESSAGES -l SIZE`. Messages per second and their ratio
   per round; every round's `.mpr` files are counted and each must say "delivered".

mailtee runs in its own process (`bench/_common.py serve`, the listeners of `proxy-admin
run` without the ingest task) with durable archiving (fsync'd `.eml` + `.mpr`) into a
state dir under --state-parent (default /var/tmp, the filesystem is reported: it must
not be tmpfs, or fsync is free), made by `_common.work_dir()` in a fresh ext4 block group
(as is the Postfix instance's root, whose queue deletes a file per message).

Every smtp-source run reports `host`: the machine's CPU shares while it ran, `steal_pct`
above all (a shared VM's hypervisor takes 0-25 % of the guest's CPU, changing within
minutes), and each mailtee run `cpu_ms_per_msg_split`: the relay's and the pair
writers' CPU per message.

    .venv/bin/python bench/smtp_relay.py            # the issue's figures
    .venv/bin/python bench/smtp_relay.py --quick    # a smoke run in a few seconds
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import relay_floor  # noqa: E402
from _common import (  # noqa: E402 - bench/ is not a package
    RssSampler,
    cpu_seconds,
    emit,
    filesystem_of,
    find_tool,
    free_port,
    host_cpu,
    host_shares,
    log,
    machine_info,
    percentile,
    rss_kib,
    split_cpu_seconds,
    start_mailtee,
    start_smtp_sink,
    stop,
    tree_cpu_seconds,
    work_dir,
)
from postfix_archiver import PostfixArchiver  # noqa: E402
from postfix_archiver import available as postfix_available  # noqa: E402

MB = 1_000_000
MAIL_FROM = "from@example.com"
RCPT_TO = "to@example.net"
TARGETS = {
    "mailtee_msgs_per_s_min": 1000,
    "ratio_to_direct_min": 0.10,
    "ratio_to_postfix_end_to_end_min": 1.5,
    "added_latency_p50_ms_max": 0.5,
    "added_latency_p99_ms_max": 2.0,
    "big_message_rss_growth_mb_max": 32,
}


# --- a raw SMTP client (no smtplib: one sendall + recv per round trip) ------------------


class RawSmtp:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 120.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.greeting = self.reply()

    def reply(self) -> bytes:
        """Read one complete (possibly multiline) reply."""
        start = 0
        while True:
            nl = self.buf.find(b"\n", start)
            if nl < 0:
                start = len(self.buf)
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"connection closed; partial reply {self.buf!r}")
                self.buf += chunk
                continue
            line_start = self.buf.rfind(b"\n", 0, nl) + 1
            if self.buf[line_start + 3 : line_start + 4] != b"-":
                out, self.buf = self.buf[: nl + 1], self.buf[nl + 1 :]
                return out
            start = nl + 1

    def cmd(self, line: bytes, expect: bytes = b"2") -> bytes:
        self.sock.sendall(line)
        r = self.reply()
        if not r.startswith(expect):
            raise RuntimeError(f"{line!r} -> {r!r}")
        return r

    def timed(self, line: bytes) -> float:
        """Seconds from sending `line` to having its whole reply."""
        t0 = time.perf_counter()
        self.sock.sendall(line)
        self.reply()
        return time.perf_counter() - t0

    def close(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        except OSError:
            pass
        self.sock.close()


# --- phases -----------------------------------------------------------------------------


def run_source(port: int, messages: int, sessions: int, size: int) -> dict[str, Any]:
    cmd = [find_tool("smtp-source"), "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    cmd += ["-f", MAIL_FROM, "-t", RCPT_TO, f"127.0.0.1:{port}"]
    host0 = host_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    result: dict[str, Any] = {
        "seconds": round(wall, 3),
        "msgs_per_s": round(messages / wall, 1),
        "exit_code": proc.returncode,
        "host": host_shares(host0, host_cpu()),
    }
    if proc.returncode != 0 or proc.stderr.strip():
        result["stderr"] = proc.stderr.strip()[-500:]
    return result


def reports(reports_dir: Path) -> set[str]:
    return {os.path.basename(p) for p in glob.glob(str(reports_dir / "*.mpr"))}


def settled_reports(reports_dir: Path, before: set[str], expected: int) -> set[str]:
    """New `.mpr` files once all are written (the report follows the reply by ms)."""
    deadline = time.monotonic() + 30
    new = reports(reports_dir) - before
    while len(new) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        new = reports(reports_dir) - before
    return new


def run_postfix(pf: PostfixArchiver, messages: int, sessions: int, size: int) -> dict[str, Any]:
    """smtp-source into Postfix; end to end = both copies (relay + always_bcc) delivered."""
    sent0 = pf.sent()
    pid = pf.master_pid()
    cpu0 = tree_cpu_seconds(pid) if pid else 0.0
    t0 = time.monotonic()
    accepted = run_source(pf.port, messages, sessions, size)
    done = pf.wait_sent(sent0 + 2 * messages)
    out: dict[str, Any] = {"accepted": accepted}
    out["delivered_copies"] = pf.sent() - sent0
    out["end_to_end_seconds"] = round(done - t0, 3) if done else None
    out["end_to_end_msgs_per_s"] = round(messages / (done - t0), 1) if done else 0.0
    if pid:
        out["postfix_cpu_s_alive_processes"] = round(tree_cpu_seconds(pid) - cpu0, 2)
    return out


def check_reports(reports_dir: Path, names: set[str]) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    for name in names:
        with open(reports_dir / name, encoding="utf-8") as f:
            outcome = json.load(f)["upstream"]["outcome"]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def latency(sink_port: int, proxy_port: int, iterations: int) -> dict[str, Any]:
    """EHLO/MAIL/RCPT/RSET/NOOP round trips, direct and via mailtee, interleaved."""
    script = [
        ("EHLO", b"EHLO bench.example\r\n"),
        ("MAIL", f"MAIL FROM:<{MAIL_FROM}>\r\n".encode()),
        ("RCPT", f"RCPT TO:<{RCPT_TO}>\r\n".encode()),
        ("RSET", b"RSET\r\n"),
        ("NOOP", b"NOOP\r\n"),
    ]
    per_conn = 1000  # iterations per connection (mailtee caps commands per session)
    warmup = min(50, iterations // 10)
    samples: dict[str, dict[str, list[float]]] = {
        "direct": {verb: [] for verb, _ in script},
        "mailtee": {verb: [] for verb, _ in script},
    }
    conns: dict[str, RawSmtp | None] = {"direct": None, "mailtee": None}
    ports = {"direct": sink_port, "mailtee": proxy_port}
    try:
        for i in range(iterations + warmup):
            for path in ("direct", "mailtee") if i % 2 == 0 else ("mailtee", "direct"):
                if i % per_conn == 0 and conns[path] is not None:
                    conns[path].close()  # type: ignore[union-attr]
                    conns[path] = None
                if conns[path] is None:
                    conns[path] = RawSmtp(ports[path])
                conn = conns[path]
                assert conn is not None
                for verb, line in script:
                    dt = conn.timed(line)
                    if i >= warmup:
                        samples[path][verb].append(dt * 1000)
    finally:
        for conn in conns.values():
            if conn is not None:
                conn.close()

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(percentile(values, 50), 4),
            "p99_ms": round(percentile(values, 99), 4),
        }

    out: dict[str, Any] = {"iterations": iterations, "commands_per_path": 0, "per_command": {}}
    all_vals: dict[str, list[float]] = {"direct": [], "mailtee": []}
    for verb, _ in script:
        d, m = samples["direct"][verb], samples["mailtee"][verb]
        all_vals["direct"] += d
        all_vals["mailtee"] += m
        sd, sm = summary(d), summary(m)
        out["per_command"][verb] = {
            "direct": sd,
            "mailtee": sm,
            "added_p50_ms": round(sm["p50_ms"] - sd["p50_ms"], 4),
            "added_p99_ms": round(sm["p99_ms"] - sd["p99_ms"], 4),
        }
    sd, sm = summary(all_vals["direct"]), summary(all_vals["mailtee"])
    out["commands_per_path"] = len(all_vals["direct"])
    out["all_commands"] = {
        "direct": sd,
        "mailtee": sm,
        "added_p50_ms": round(sm["p50_ms"] - sd["p50_ms"], 4),
        "added_p99_ms": round(sm["p99_ms"] - sd["p99_ms"], 4),
    }
    return out


def big_message_chunks(total: int, headers: bytes) -> Iterator[bytes]:
    """`total` bytes of message: headers, then 80-byte lines, in ~1 MB chunks."""
    yield headers
    remaining = total - len(headers)
    line = b"x" * 78 + b"\r\n"
    block = line * (MB // len(line))
    while remaining >= len(block):
        yield block
        remaining -= len(block)
    full, rest = divmod(remaining, len(line))
    tail = line * full
    if rest == 1:  # stay CRLF-terminated: lengthen the last full line by one byte
        tail = tail[: -len(line)] + b"x" + line
    elif rest:
        tail += b"y" * (rest - 2) + b"\r\n"
    yield tail


def big_message(proxy_port: int, pid: int, reports_dir: Path, total: int) -> dict[str, Any]:
    headers = (
        f"From: <{MAIL_FROM}>\r\nTo: <{RCPT_TO}>\r\nSubject: big message\r\n"
        "Message-ID: <big@bench.example>\r\n\r\n"
    ).encode()
    before = reports(reports_dir)
    time.sleep(0.5)
    baseline = rss_kib(pid)
    sent = 0
    conn = RawSmtp(proxy_port, timeout=600)
    with RssSampler(pid, 0.05) as sampler:
        t0 = time.perf_counter()
        conn.cmd(b"EHLO bench.example\r\n")
        conn.cmd(f"MAIL FROM:<{MAIL_FROM}> SIZE={total}\r\n".encode())
        conn.cmd(f"RCPT TO:<{RCPT_TO}>\r\n".encode())
        conn.cmd(b"DATA\r\n", expect=b"354")
        for chunk in big_message_chunks(total, headers):
            conn.sock.sendall(chunk)
            sent += len(chunk)
        final = conn.cmd(b".\r\n")
        wall = time.perf_counter() - t0
        conn.close()
        time.sleep(0.2)
    # the warm-up's last reports may still appear: the big one is the one of its size
    deadline = time.monotonic() + 30
    new: list[str] = []
    while not new and time.monotonic() < deadline:
        new = [
            n
            for n in reports(reports_dir) - before
            if (reports_dir / n).with_suffix(".eml").stat().st_size >= total // 2
        ]
        time.sleep(0.1)
    eml_size = None
    outcome = None
    if len(new) == 1:
        stem = new[0][: -len(".mpr")]
        eml_size = (reports_dir / f"{stem}.eml").stat().st_size
        outcome = check_reports(reports_dir, set(new))
    peak = sampler.peak_kib
    return {
        "message_bytes": sent,
        "seconds": round(wall, 3),
        "mb_per_s": round(sent / MB / wall, 1),
        "final_reply": final.decode("ascii", "replace").strip(),
        "eml_bytes": eml_size,
        "eml_size_ok": eml_size == sent,
        "outcomes": outcome,
        "rss_samples": len(sampler.samples),
        "rss_baseline_mb": round(baseline * 1024 / MB, 2),
        "rss_peak_mb": round(peak * 1024 / MB, 2),
        "rss_growth_mb": round((peak - baseline) * 1024 / MB, 2),
    }


# --- main -------------------------------------------------------------------------------


def tls_client_round(
    port: int, messages: int, sessions: int, size: int, ca: Path
) -> dict[str, Any]:
    """`sessions` threads, one message per connection with STARTTLS (smtp-source has no
    TLS): connect, EHLO, STARTTLS (certificate verified), EHLO, MAIL, RCPT, DATA, QUIT."""
    import smtplib
    import ssl
    import threading

    ctx = ssl.create_default_context(cafile=str(ca))
    body = (b"Subject: tls bench\r\n\r\n" + b"x" * 78 + b"\r\n") * (size // 80 + 1)
    body = body[:size]
    counter = iter(range(messages))
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
                    c.starttls(context=ctx)
                    c.sendmail(MAIL_FROM, [RCPT_TO], body)
            except (OSError, smtplib.SMTPException) as e:
                with lock:
                    errors.append(str(e)[:200])

    threads = [threading.Thread(target=worker) for _ in range(sessions)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "seconds": round(wall, 3),
        "msgs_per_s": round(messages / wall, 1),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def make_tls_files(state: Path, work: Path) -> Path:
    """A test CA and a leaf for 127.0.0.1 in state/tls (mailtee) and work/ (Postfix)."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    tls = state / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    for d in (tls, work):
        leaf.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
        leaf.private_key_pem.write_to_path(str(d / "key.pem"))
        os.chmod(d / "key.pem", 0o600 if d == tls else 0o644)
    ca.cert_pem.write_to_path(str(work / "ca.pem"))
    return work / "ca.pem"


def write_config(path: Path, state: Path, sink_port: int, sessions: int, workers: int) -> None:
    path.write_text(
        f"""hostname = "bench.mailtee"
state_dir = "{state}"
workers = {workers}
log_level = "info"
on_archive_failure = "reject"

[limits]
max_connections = {max(500, sessions * 2)}

[[listener]]
name = "smtp"
protocol = "smtp"
listen = "127.0.0.1"
port = 0
target_host = "127.0.0.1"
target_port = {sink_port}

[[listener]]
name = "starttls"
protocol = "smtp"
listen = "127.0.0.1"
port = 0
client_tls = "starttls"
target_host = "127.0.0.1"
target_port = {sink_port}
"""
    )


def cleanup(work: Path, keep: bool, *procs: Any, rm: bool = True) -> None:
    for proc in procs:
        stop(proc)
    if rm and keep:
        log(f"kept {work}")
    elif rm:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=10_000, help="messages per smtp-source run")
    p.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    p.add_argument("--size", type=int, default=10_240, help="payload bytes per message")
    p.add_argument("--big-mb", type=int, default=100, help="size of the big message (10^6 B)")
    p.add_argument("--latency-iterations", type=int, default=2000, help="5 commands each")
    p.add_argument("--rounds", type=int, default=3, help="direct/mailtee throughput pairs")
    p.add_argument("--state-parent", type=Path, default=Path("/var/tmp"))
    p.add_argument("--keep", action="store_true", help="keep the state dir (path on stderr)")
    p.add_argument("--cprofile", type=Path, help="profile mailtee's Trio thread to this file")
    p.add_argument("--quick", action="store_true", help="small smoke run")
    p.add_argument("--workers", type=int, default=0, help="mailtee workers (0: one per core)")
    p.add_argument("--no-postfix", action="store_true", help="skip the Postfix archiving relay")
    p.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the floor relays (bench/relay_floor.py: a bare Python+Trio byte pump "
        "with the same workers and one upstream connection per client connection)",
    )
    p.add_argument(
        "--ingest",
        action="store_true",
        help="also run the archive ingest task in mailtee's supervisor (off by default: "
        "the relay path is measured; bench/ingest.py measures ingest)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.big_mb, args.latency_iterations, args.rounds = 1000, 10, 200, 1

    work = work_dir(args.state_parent, "mailtee-bench-")
    state = work / "state"
    reports_dir = state / "reports"
    fs = filesystem_of(work)
    if fs["type"] in ("tmpfs", "ramfs"):
        log(f"WARNING: {work} is on {fs['type']}: fsync costs nothing there")
    result: dict[str, Any] = {
        "benchmark": "smtp_relay",
        "params": {
            "messages": args.messages,
            "sessions": args.sessions,
            "size": args.size,
            "big_mb": args.big_mb,
            "latency_iterations": args.latency_iterations,
            "rounds": args.rounds,
            "quick": args.quick,
            "ingest": args.ingest,
        },
        "machine": {**machine_info(), "state_dir_filesystem": fs},
        "targets": TARGETS,
    }
    sink = proxy = None
    floors: dict[str, Any] = {}
    try:
        sink_port = free_port()
        sink = start_smtp_sink(sink_port)
        config = work / "config.toml"
        write_config(config, state, sink_port, args.sessions, args.workers)
        ca_file = make_tls_files(state, work)
        postfix = None
        if postfix_available() and not args.no_postfix:
            archive_sink_port = free_port()
            archive_sink = start_smtp_sink(archive_sink_port)
            postfix = PostfixArchiver(
                free_port(),
                sink_port,
                archive_sink_port,
                args.state_parent,
                tls=(work / "cert.pem", work / "key.pem"),
            )
            postfix.start()
            log(f"postfix archiving relay :{postfix.port} (always_bcc -> :{archive_sink_port})")
        if not args.no_floor:
            n_workers = args.workers or len(os.sched_getaffinity(0))
            for kind in ("trio", "fast"):
                fport = free_port()
                floors[kind] = (relay_floor.start(fport, sink_port, n_workers, kind), fport)
            log(f"floor relays: {', '.join(f'{k} :{v[1]}' for k, v in floors.items())}")
        proxy, ports = start_mailtee(config, work, cprofile=args.cprofile, ingest=args.ingest)
        pport, ppid = ports["smtp"], proxy.pid
        log(f"sink :{sink_port}, mailtee :{pport} (pid {ppid}), state in {state} ({fs['type']})")

        run_source(pport, 200, min(args.sessions, 20), args.size)  # warm-up
        log(f"big message: {args.big_mb} MB")
        result["big_message"] = big_message(pport, ppid, reports_dir, args.big_mb * MB)

        log(f"latency: {args.latency_iterations} x 5 commands per path")
        result["latency"] = latency(sink_port, pport, args.latency_iterations)

        rounds = []
        for r in range(args.rounds):
            log(f"throughput round {r + 1}/{args.rounds}: direct")
            direct = run_source(sink_port, args.messages, args.sessions, args.size)
            log(f"throughput round {r + 1}/{args.rounds}: via mailtee")
            load_before = round(os.getloadavg()[0], 2)
            before = reports(reports_dir)
            split0, sink_cpu0 = split_cpu_seconds(ppid), cpu_seconds(sink.pid)
            via = run_source(pport, args.messages, args.sessions, args.size)
            sink_cpu1 = cpu_seconds(sink.pid)
            new = settled_reports(reports_dir, before, args.messages)
            split1 = split_cpu_seconds(ppid)  # after the reports: the pair writers' share
            outcomes = check_reports(reports_dir, new)
            spent = {k: split1[k] - split0[k] for k in split0}
            cpu = sum(spent.values())
            via["mailtee_cpu_s"] = round(cpu, 2)
            via["mailtee_cpu_share_of_one_core"] = round(cpu / via["seconds"], 2)
            via["mailtee_cpu_ms_per_msg"] = round(cpu / args.messages * 1000, 3)
            # of which: the relay processes (on the reply's path) and the pair writers
            via["cpu_ms_per_msg_split"] = {
                k: round(v / args.messages * 1000, 3) for k, v in spent.items()
            }
            via["sink_cpu_s"] = round(sink_cpu1 - sink_cpu0, 2)
            via["reports"] = len(new)
            via["outcomes"] = outcomes
            via["all_archived_and_delivered"] = (
                len(new) == args.messages and outcomes.get("delivered", 0) == args.messages
            )
            via["loadavg_1m_before"] = load_before
            entry = {
                "direct": direct,
                "mailtee": via,
                "ratio": round(via["msgs_per_s"] / direct["msgs_per_s"], 4),
            }
            for kind, (fproc, fport) in floors.items():
                log(f"throughput round {r + 1}/{args.rounds}: floor relay ({kind})")
                f0 = tree_cpu_seconds(fproc.pid)
                fl = run_source(fport, args.messages, args.sessions, args.size)
                fl["cpu_ms_per_msg"] = round(
                    (tree_cpu_seconds(fproc.pid) - f0) / args.messages * 1000, 3
                )
                entry[f"floor_{kind}"] = fl
            if "floor_fast" in entry:
                entry["mailtee_cpu_ms_per_msg_above_fast_floor"] = round(
                    via["mailtee_cpu_ms_per_msg"] - entry["floor_fast"]["cpu_ms_per_msg"], 3
                )
            if postfix is not None:
                log(f"throughput round {r + 1}/{args.rounds}: via postfix (always_bcc)")
                entry["postfix"] = run_postfix(postfix, args.messages, args.sessions, args.size)
                e2e = entry["postfix"]["end_to_end_msgs_per_s"]
                entry["ratio_to_postfix_end_to_end"] = round(via["msgs_per_s"] / e2e, 3)
            rounds.append(entry)
            log(
                f"  direct {direct['msgs_per_s']} msg/s, mailtee {via['msgs_per_s']} msg/s "
                f"({via['mailtee_cpu_ms_per_msg']} ms CPU/msg, load {load_before}, "
                f"steal {direct['host']['steal_pct']} / {via['host']['steal_pct']} %), "
                f"postfix e2e {entry.get('postfix', {}).get('end_to_end_msgs_per_s')}, "
                + ", ".join(
                    f"floor {k} {entry[f'floor_{k}']['msgs_per_s']} msg/s "
                    f"({entry[f'floor_{k}']['cpu_ms_per_msg']} ms)"
                    for k in floors
                )
                + f"; reports {len(new)} {outcomes}"
            )
        tls_messages = max(200, args.messages // 10)
        log(f"STARTTLS on the client side: {tls_messages} messages, mailtee")
        before = reports(reports_dir)
        cpu0 = tree_cpu_seconds(ppid)
        tls_round: dict[str, Any] = {
            "messages": tls_messages,
            "mailtee": tls_client_round(
                ports["starttls"], tls_messages, args.sessions, args.size, ca_file
            ),
        }
        tls_round["mailtee"]["cpu_ms_per_msg"] = round(
            (tree_cpu_seconds(ppid) - cpu0) / tls_messages * 1000, 3
        )
        tls_new = settled_reports(reports_dir, before, tls_messages)
        tls_round["mailtee"]["reports"] = len(tls_new)
        tls_round["mailtee"]["outcomes"] = check_reports(reports_dir, tls_new)
        if postfix is not None:
            log("STARTTLS on the client side: postfix")
            sent0 = postfix.sent()
            t0 = time.monotonic()
            tls_round["postfix"] = tls_client_round(
                postfix.port, tls_messages, args.sessions, args.size, ca_file
            )
            done = postfix.wait_sent(sent0 + 2 * tls_messages)
            tls_round["postfix"]["end_to_end_msgs_per_s"] = (
                round(tls_messages / (done - t0), 1) if done else 0.0
            )
            tls_round["ratio_to_postfix_end_to_end"] = round(
                tls_round["mailtee"]["msgs_per_s"] / tls_round["postfix"]["end_to_end_msgs_per_s"],
                3,
            )
        result["starttls_client_side"] = tls_round
        if postfix is not None:
            result["postfix_median_end_to_end_msgs_per_s"] = statistics.median(
                r["postfix"]["end_to_end_msgs_per_s"] for r in rounds
            )
            result["median_ratio_to_postfix_end_to_end"] = statistics.median(
                r["ratio_to_postfix_end_to_end"] for r in rounds
            )
        result["rss_after_throughput_mb"] = round(rss_kib(ppid) * 1024 / MB, 2)
        tmp_left = [n for n in os.listdir(reports_dir) if n.endswith(".tmp")]
        result["throughput"] = {
            "rounds": rounds,
            "median_direct_msgs_per_s": statistics.median(
                r["direct"]["msgs_per_s"] for r in rounds
            ),
            "median_mailtee_msgs_per_s": statistics.median(
                r["mailtee"]["msgs_per_s"] for r in rounds
            ),
            "median_ratio": statistics.median(r["ratio"] for r in rounds),
            "median_mailtee_cpu_ms_per_msg": statistics.median(
                r["mailtee"]["mailtee_cpu_ms_per_msg"] for r in rounds
            ),
            **{
                f"median_floor_{k}_{f}": statistics.median(r[f"floor_{k}"][f] for r in rounds)
                for k in floors
                for f in ("msgs_per_s", "cpu_ms_per_msg")
            },
            "tmp_files_left": len(tmp_left),
        }
    except BaseException:
        cleanup(work, args.keep, proxy, sink)
        raise
    finally:
        for fproc, _ in floors.values():
            stop(fproc)
        if postfix is not None:
            postfix.stop()
            stop(archive_sink)
    cleanup(work, args.keep, proxy, sink, rm=False)

    t, lat, big = result["throughput"], result["latency"]["all_commands"], result["big_message"]
    checks = {
        "mailtee_msgs_per_s": t["median_mailtee_msgs_per_s"] >= TARGETS["mailtee_msgs_per_s_min"],
        "ratio_to_direct": t["median_ratio"] >= TARGETS["ratio_to_direct_min"],
        "ratio_to_postfix_end_to_end": result.get("median_ratio_to_postfix_end_to_end", 0)
        >= TARGETS["ratio_to_postfix_end_to_end_min"],
        "added_latency_p50": lat["added_p50_ms"] <= TARGETS["added_latency_p50_ms_max"],
        "added_latency_p99": lat["added_p99_ms"] <= TARGETS["added_latency_p99_ms_max"],
        "big_message_rss_growth": big["rss_growth_mb"] <= TARGETS["big_message_rss_growth_mb_max"],
        "all_archived_and_delivered": all(
            r["mailtee"]["all_archived_and_delivered"] for r in t["rounds"]
        )
        and big["eml_size_ok"]
        and t["tmp_files_left"] == 0,
    }
    result["pass"] = checks
    result["all_pass"] = all(checks.values())
    emit(result)
    cleanup(work, args.keep, None, None)  # ~60,000 files: after the JSON is out
    return 0 if checks["all_archived_and_delivered"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
