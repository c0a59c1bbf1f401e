"""POP3 relay benchmark (issue 4): RETRs from a real Dovecot, directly and via mailtee.

Prints ONE JSON object on stdout (progress goes to stderr). Everything runs in one
invocation on loopback, so each ratio compares like with like on a noisy machine:

1. Dovecot (tests/fixtures/dovecot.py: plain POP3 + implicit TLS, trustme certificates)
   with mailbox `bench` holding `--messages` messages of `--size` bytes as served
   (1 KB = 1024 B; CRLF lines of 78 characters, every 20th starting with a dot so the
   stuffing path is exercised) and mailbox `big` holding one `--big-mb` MB message
   (1 MB = 10^6 B).
2. mailtee in its own process (`bench/_common.py serve`: the listeners of `proxy-admin
   run` without the ingest task) with two listeners: `plain` (client none -> Dovecot
   plain) and `tls` (client implicit TLS -> Dovecot implicit TLS, certificate verified).
   Archiving is durable (group commit: the RETR's journal record fdatasync'd before the
   terminating "."; the `.eml` + `.mpr` pair follows, docs/reliability.md) into a state
   dir under `--state-parent` (default: the directory holding the repository, i.e. the
   /work disk; its filesystem is reported and must not be tmpfs, or fsync is free).
3. RSS: the big message is RETRed through each listener by a raw-socket client while the
   mailtee process' VmRSS is sampled every 50 ms from /proc; growth = peak - baseline.
4. Throughput: for each transport (plain, tls) and each `--sessions` value, `--rounds`
   pairs of (direct run, mailtee run). A run is `sessions` concurrent clients (threads,
   raw sockets) that each log in, list UIDL (as real clients do) and RETR their share of
   the messages, reading every byte up to the terminating ".\\r\\n"; wall time covers
   connect to QUIT. Every mailtee run's new `.mpr` files are checked: one per RETR,
   outcome "delivered", size and SHA-256 equal to the served message.
5. Floors (plain only; `--no-floors` skips them): each round also runs the same clients
   through bench/relay_floor.py's fastsock byte pump (`pump`: what a Trio relay pays with
   no POP3, no copy), through bench/pop3_floor.py (`durable`: blocking threads that
   flush each RETR's body before its terminator and do nothing else) and through
   bench/pop3_contract_floor.c (`contract`: the same in C plus the rest of mailtee's
   contract -- unstuffed copy, SHA-256, journal record with its report document, log
   line, `.eml` + `.mpr` pair -- whose reports are checked like mailtee's), so "how much
   of the gap is the barrier, how much the contract, how much mailtee's own work" is
   measured in the same run.
6. `--phases` (with `--workers 1 --sessions 1` and one transport): bench/phases.py
   times every step of the relay's Trio thread, so `phases` gives the critical path of
   a RETR: how much of it is the relay's own work and how much waiting for Dovecot, the
   client, the disk and loopback sends, and `ratio_if_the_relay_cost_nothing` (the
   waits alone against direct; compare with the contract floor of the same run).

Every timed run also reports `host`: the machine's CPU shares during it from /proc/stat,
`steal_pct` above all (on a shared VM the hypervisor takes 0-25 % of the guest's CPU time,
changing within minutes: a run with much more steal than its partner is not comparable),
and each mailtee run `cpu_ms_per_retr_split`: the relay processes' CPU and the pair
writers'. The state dir is made by `_common.work_dir()` (a fresh ext4 block group, so
the inodes an earlier run deleted do not slow this run's file creations).

Issue 12's targets: mailtee >= 0.35 of the direct throughput with one session and
>= 0.5 with several; `pass` reports them per transport and concurrency. With one
session, each RETR waits for one barrier (a journal fdatasync) before the client sees
the end of the message (DESIGN invariant 1); `barriers_per_retr` (from the workers'
`status`) shows how far the barrier is shared with several sessions.

    .venv/bin/python bench/pop3_relay.py            # the issue's figures (a few minutes)
    .venv/bin/python bench/pop3_relay.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import ssl
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - bench/ is not a package
    REPO,
    RssSampler,
    emit,
    filesystem_of,
    free_port,
    host_cpu,
    host_shares,
    log,
    machine_info,
    rss_kib,
    split_cpu_seconds,
    start_mailtee,
    stop,
    tree_cpu_seconds,
    work_dir,
)

sys.path.insert(0, str(REPO / "tests"))

import trustme  # noqa: E402
from phases import summary as phases_summary  # noqa: E402

from fixtures.dovecot import DovecotServer, start_dovecot  # noqa: E402

KB = 1024
MB = 1_000_000
HOST = "127.0.0.1"
USERS = {"bench": "bench-pw", "big": "big-pw"}
TERMINATOR = b"\r\n.\r\n"
TARGETS = {
    "ratio_to_direct_min_1_session": 0.35,
    "ratio_to_direct_min": 0.5,
    "big_message_rss_growth_mb_max": 32,
}


# --- messages ---------------------------------------------------------------------------


def make_message(n: int, size: int) -> bytes:
    """Exactly `size` bytes of CRLF lines, distinct per n (the served form: CRLF)."""
    head = (
        f"From: sender{n}@example.org\r\nTo: bench@example.net\r\n"
        f"Subject: bench message {n}\r\nMessage-ID: <bench-{n}@example.org>\r\n\r\n"
    ).encode()
    lines = []
    total = len(head)
    i = 0
    while total + 80 <= size - 80:
        line = (b"." if i % 20 == 0 else b"") + b"%08d-%06d " % (n, i)
        line += b"x" * (78 - len(line)) + b"\r\n"
        lines.append(line)
        total += len(line)
        i += 1
    rest = size - total  # 80..159 bytes: one or two lines
    if rest > 120:
        lines.append(b"y" * 78 + b"\r\n")
        rest -= 80
    lines.append(b"z" * (rest - 2) + b"\r\n")
    msg = head + b"".join(lines)
    assert len(msg) == size, (len(msg), size)
    return msg


def big_message(size: int) -> bytes:
    head = b"From: big@example.org\r\nTo: big@example.net\r\nSubject: big\r\n\r\n"
    line = b"x" * 78 + b"\r\n"
    body = line * ((size - len(head)) // len(line))
    msg = head + body
    pad = size - len(msg)
    if pad:
        msg = msg[: -len(line)] + b"x" * pad + line  # lengthen the last line
    assert len(msg) == size
    return msg


# --- a raw POP3 client ----------------------------------------------------------------------


class RawPop3:
    """Blocking POP3 over a (TLS) socket: status lines and multi-line bodies, no parsing
    beyond finding the terminator (the client must not be the bottleneck)."""

    def __init__(self, port: int, ctx: ssl.SSLContext | None, tls_name: str = "localhost"):
        sock = socket.create_connection((HOST, port), timeout=300)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = ctx.wrap_socket(sock, server_hostname=tls_name) if ctx else sock
        self.buf = bytearray()
        self.status()  # greeting

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError(f"connection closed; buffered {bytes(self.buf[:200])!r}")
        self.buf += chunk

    def status(self) -> bytes:
        while (nl := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[: nl + 2])
        del self.buf[: nl + 2]
        if not line.startswith(b"+OK"):
            raise RuntimeError(f"POP3 error: {line!r}")
        return line

    def cmd(self, line: bytes) -> bytes:
        self.sock.sendall(line)
        return self.status()

    def multiline(self, line: bytes) -> int:
        """Send a command answered by +OK and data; return the stuffed data length."""
        self.sock.sendall(line)
        self.status()
        # The data ends with CRLF "." CRLF; an empty body is just ".\r\n".
        start = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                del self.buf[:3]
                return 0
            end = self.buf.find(TERMINATOR, start)
            if end >= 0:
                del self.buf[: end + len(TERMINATOR)]
                return end + 2
            start = max(0, len(self.buf) - len(TERMINATOR) + 1)
            self._fill()

    def login(self, user: str, password: str) -> None:
        self.cmd(f"USER {user}\r\n".encode())
        self.cmd(f"PASS {password}\r\n".encode())

    def quit(self) -> None:
        try:
            self.cmd(b"QUIT\r\n")
        finally:
            self.sock.close()


def client_session(
    port: int, ctx: ssl.SSLContext | None, numbers: list[int], errors: list[str], done: list[int]
) -> None:
    try:
        pop = RawPop3(port, ctx)
        pop.login("bench", USERS["bench"])
        pop.multiline(b"UIDL\r\n")
        for n in numbers:
            pop.multiline(b"RETR %d\r\n" % n)
            done.append(n)
        pop.quit()
    except Exception as e:  # reported in the JSON, the run counts as failed
        errors.append(f"{type(e).__name__}: {e}"[:300])


def run_clients(
    port: int, ctx: ssl.SSLContext | None, messages: int, sessions: int, size: int
) -> dict[str, Any]:
    shares = [list(range(1 + i, messages + 1, sessions)) for i in range(sessions)]
    errors: list[str] = []
    done: list[int] = []
    threads = [
        threading.Thread(target=client_session, args=(port, ctx, share, errors, done))
        for share in shares
    ]
    host0 = host_cpu()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {
        "seconds": round(wall, 3),
        "retrs": len(done),
        "retr_per_s": round(len(done) / wall, 1),
        "mb_per_s": round(len(done) * size / MB / wall, 2),
        "host": host_shares(host0, host_cpu()),
    }
    if errors:
        out["errors"] = errors[:5]
    return out


# --- the floors --------------------------------------------------------------------------------


def start_floors(target_port: int, work: Path) -> dict[str, tuple[int, Any]]:
    """The two floor relays in front of Dovecot's plain port: name -> (port, process).

    - `pump`: bench/relay_floor.py's fastsock byte pump, one process (no POP3, no copy);
    - `durable`: bench/pop3_floor.py, blocking threads that flush each RETR's body
      (pwrite + fdatasync) before its terminator (invariant 1 and nothing else);
    - `contract`: bench/pop3_contract_floor.c, the same in C plus the rest of the
      contract (unstuffed copy, SHA-256, journal record, log line, report pair): what a
      compiled implementation would pay (left out when there is no C compiler).
    """
    import contract_floor
    import pop3_floor
    import relay_floor

    ports = [free_port(), free_port(), free_port()]
    floors = {
        "pump": (ports[0], relay_floor.start(ports[0], target_port, 1, "fast")),
        "durable": (ports[1], pop3_floor.start(ports[1], target_port, work / "floor.ring")),
    }
    binary = contract_floor.build(work)
    if binary is not None:
        state = work / "contract-floor"
        floors["contract"] = (ports[2], contract_floor.start(binary, ports[2], target_port, state))
    return floors


def run_floors(
    floors: dict[str, tuple[int, Any]],
    args: argparse.Namespace,
    sessions: int,
    direct: dict[str, Any],
    mailtee: dict[str, Any],
    work: Path,
    expected: dict[int, str],
) -> dict[str, Any]:
    """One run through each floor, right after the direct and mailtee runs of a round.

    The contract floor's report pairs are checked like mailtee's (`archive`)."""
    out: dict[str, Any] = {}
    contract_reports = work / "contract-floor" / "reports"
    for name, (port, proc) in floors.items():
        cpu0 = tree_cpu_seconds(proc.pid)
        before = mpr_names(contract_reports) if name == "contract" else set()
        r = run_clients(port, None, args.messages, sessions, args.size)
        r["cpu_ms_per_retr"] = round((tree_cpu_seconds(proc.pid) - cpu0) / args.messages * 1e3, 3)
        if name == "contract":  # its pairs follow the "." like mailtee's
            new = new_reports(contract_reports, before, args.messages)
            r["archive"] = check_reports(contract_reports, new, expected)
        r["ratio"] = round(r["retr_per_s"] / direct["retr_per_s"], 4)
        #: mailtee's throughput as a share of this floor's
        r["mailtee_share"] = round(mailtee["retr_per_s"] / r["retr_per_s"], 4)
        out[name] = r
    return out


def floor_medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    if not rounds or "floors" not in rounds[0]:
        return {}
    return {
        f"median_ratio_floor_{name}": statistics.median(x["floors"][name]["ratio"] for x in rounds)
        for name in rounds[0]["floors"]
    }


# --- reports ------------------------------------------------------------------------------------


def mpr_names(reports_dir: Path) -> set[str]:
    return {p.name for p in reports_dir.glob("*.mpr")}


def new_reports(reports_dir: Path, before: set[str], count: int) -> set[str]:
    """The `.mpr` names not in `before`, once there are `count` of them or 30 s passed
    (a pair follows its RETR's "." by milliseconds, written off the ack path)."""
    settle = time.monotonic() + 30
    new = mpr_names(reports_dir) - before
    while len(new) < count and time.monotonic() < settle:
        time.sleep(0.05)
        new = mpr_names(reports_dir) - before
    return new


def check_reports(reports_dir: Path, names: set[str], expected: dict[int, str]) -> dict[str, Any]:
    """Every new report: delivered, account `bench`, and the SHA-256 of a served message.

    `content_errors` counts reports whose hash is not that of any served message (a
    corrupted copy). `msgno_differs` only notes a report whose message number is not the
    delivery order (Dovecot numbers messages in its own order): informational.
    """
    outcomes: dict[str, int] = {}
    content_errors = msgno_differs = 0
    served = set(expected.values())
    msgs: set[int] = set()
    shas: set[str] = set()
    for name in names:
        rep = json.loads((reports_dir / name).read_text("utf-8"))
        outcome = rep["upstream"]["outcome"]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        msgs.add(rep["pop3"]["msg"])
        shas.add(rep["sha256"])
        if rep["sha256"] not in served or rep["pop3"]["user"] != "bench":
            content_errors += 1
        elif rep["sha256"] != expected.get(rep["pop3"]["msg"]):
            msgno_differs += 1
    return {
        "reports": len(names),
        "outcomes": outcomes,
        "content_errors": content_errors,
        "distinct_messages": len(shas),
        "distinct_msg_numbers": len(msgs),
        "msgno_differs": msgno_differs,
    }


# --- phases -------------------------------------------------------------------------------------


def big_retr(port: int, ctx: ssl.SSLContext | None, pid: int, size: int) -> dict[str, Any]:
    time.sleep(0.5)
    baseline = rss_kib(pid)
    with RssSampler(pid, 0.05) as sampler:
        t0 = time.perf_counter()
        pop = RawPop3(port, ctx)
        pop.login("big", USERS["big"])
        got = pop.multiline(b"RETR 1\r\n")
        wall = time.perf_counter() - t0
        pop.quit()
        time.sleep(0.2)
    peak = sampler.peak_kib
    return {
        "message_bytes": size,
        "stuffed_bytes_received": got,
        "seconds": round(wall, 3),
        "mb_per_s": round(size / MB / wall, 1),
        "rss_samples": len(sampler.samples),
        "rss_baseline_mb": round(baseline * KB / MB, 2),
        "rss_peak_mb": round(peak * KB / MB, 2),
        "rss_growth_mb": round((peak - baseline) * KB / MB, 2),
    }


def commit_counters(state: Path) -> tuple[int, int, dict[str, float]]:
    """(barriers, messages committed, timings in ms) summed over the workers (`status`).

    The timings are the committers' cumulative figures: `wait_ms` (a session's wait from
    queueing its message to its release: what an acknowledgement waits for), `batch_ms`
    (the committer thread's work per batch), `barrier_ms` (its flush calls alone) and
    `retire_ms` (flushing retired segments' pairs, off the acknowledgement path).
    """
    sys.path.insert(0, str(REPO))
    from proxy import control

    timings = dict.fromkeys(TIMINGS, 0.0)
    try:
        reply = control.request(control.socket_path(state), "status", timeout=5)
    except (OSError, control.ControlError):
        return 0, 0, timings
    barriers = committed = 0
    for w in (reply.get("status") or {}).get("workers", []):
        c = w.get("commit") or {}
        barriers += c.get("batches", 0)
        committed += c.get("committed", 0)
        for k in TIMINGS:
            timings[k] += c.get(k, 0.0)
    return barriers, committed, timings


TIMINGS = ("wait_ms", "batch_ms", "barrier_ms", "retire_ms")


def write_config(
    path: Path, state: Path, dovecot: DovecotServer, ca_file: Path, workers: int | None
) -> None:
    # workers: None = the default (one per core); --cprofile needs 1 (one process)
    path.write_text(
        f"""hostname = "bench.mailtee"
state_dir = "{state}"
{"" if workers is None else f"workers = {workers}"}
log_level = "info"
on_archive_failure = "reject"

[[listener]]
name = "plain"
protocol = "pop3"
listen = "{HOST}"
port = 0
target_host = "{HOST}"
target_port = {dovecot.port}

[[listener]]
name = "tls"
protocol = "pop3"
listen = "{HOST}"
port = 0
client_tls = "implicit"
target_host = "{HOST}"
target_port = {dovecot.tls_port}
target_tls = "implicit"
target_ca = "{ca_file}"
"""
    )


def write_proxy_cert(ca: trustme.CA, state: Path) -> None:
    tls = state / "tls"
    tls.mkdir(parents=True)
    leaf = ca.issue_cert(HOST, "localhost", common_name="localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tls / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tls / "key.pem"))
    (tls / "key.pem").chmod(0o600)


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - one linear script
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1000, help="RETRs per run")
    p.add_argument("--size", type=int, default=50 * KB, help="bytes per message as served")
    p.add_argument(
        "--sessions",
        type=int,
        nargs="+",
        default=[1, 8],
        help="concurrent clients per run (Dovecot allows 10 per user+IP)",
    )
    p.add_argument("--rounds", type=int, default=3, help="direct/mailtee pairs per case")
    p.add_argument("--transports", nargs="+", default=["plain", "tls"], choices=["plain", "tls"])
    p.add_argument("--big-mb", type=int, default=50, help="big message size (10^6 B)")
    p.add_argument("--state-parent", type=Path, default=REPO.parent)
    p.add_argument("--keep", action="store_true", help="keep the state dir (path on stderr)")
    p.add_argument(
        "--cprofile", type=Path, help="profile mailtee's Trio thread to this file (--workers 1)"
    )
    p.add_argument("--workers", type=int, help="mailtee worker processes (default: per core)")
    p.add_argument(
        "--phases",
        action="store_true",
        help="time each step of a RETR in the relay (bench/phases.py): the critical path "
        "of one session; needs --workers 1, --sessions 1 and one transport",
    )
    p.add_argument(
        "--no-floors",
        action="store_true",
        help="skip the floor relays (plain only: bench/relay_floor.py's byte pump, "
        "bench/pop3_floor.py's durable minimum, bench/pop3_contract_floor.c's whole "
        "contract in C)",
    )
    p.add_argument("--quick", action="store_true", help="small smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.rounds, args.big_mb, args.sessions = 200, 1, 10, [1, 4]
    if args.phases and (args.workers != 1 or args.sessions != [1] or len(args.transports) != 1):
        p.error("--phases needs --workers 1 --sessions 1 and one --transports")

    work = work_dir(args.state_parent, "mailtee-bench-pop3-")
    state = work / "state"
    reports_dir = state / "reports"
    fs = filesystem_of(work)
    if fs["type"] in ("tmpfs", "ramfs"):
        log(f"WARNING: {work} is on {fs['type']}: fsync costs nothing there")
    result: dict[str, Any] = {
        "benchmark": "pop3_relay",
        "params": {
            "messages": args.messages,
            "size": args.size,
            "sessions": args.sessions,
            "rounds": args.rounds,
            "big_mb": args.big_mb,
            "quick": args.quick,
        },
        "machine": {**machine_info(), "state_dir_filesystem": fs},
        "transports": args.transports,
        "targets": TARGETS,
    }
    ca = trustme.CA(organization_name="mailtee bench")
    ca_file = work / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ctx = ssl.create_default_context(cafile=str(ca_file))
    proxy = None
    phases_file: Path | None = None
    floors: dict[str, tuple[int, Any]] = {}
    try:
        with start_dovecot(tls_ca=ca, users=USERS) as dovecot:
            log(f"delivering {args.messages} x {args.size} B and one {args.big_mb} MB message")
            expected: dict[int, str] = {}
            for n in range(1, args.messages + 1):
                served = dovecot.deliver("bench", make_message(n, args.size))
                expected[n] = hashlib.sha256(served).hexdigest()
            dovecot.deliver("big", big_message(args.big_mb * MB))
            result["dovecot"] = {"maildir": str(dovecot.root), "fs": filesystem_of(dovecot.root)}

            write_proxy_cert(ca, state)
            config = work / "config.toml"
            write_config(config, state, dovecot, ca_file, args.workers)
            if args.phases:
                phases_file = work / "phases.json"
            proxy, ports = start_mailtee(config, work, cprofile=args.cprofile, phases=phases_file)
            pid = proxy.pid
            log(f"dovecot :{dovecot.port}/:{dovecot.tls_port}, mailtee {ports} (pid {pid})")
            if "plain" in args.transports and not args.no_floors:
                floors = start_floors(dovecot.port, work)
                log(f"floor relays { ({k: v[0] for k, v in floors.items()}) }")
            direct = {"plain": (dovecot.port, None), "tls": (dovecot.tls_port, ctx)}
            via = {"plain": (ports["plain"], None), "tls": (ports["tls"], ctx)}

            # Warm-up: Dovecot's index and page cache, mailtee's first sessions.
            for transport in ("plain", "tls"):
                run_clients(*direct[transport], args.messages, 4, args.size)
                run_clients(*via[transport], min(args.messages, 100), 2, args.size)
            for port, _ in floors.values():
                run_clients(port, None, min(args.messages, 100), 2, args.size)

            result["big_message"] = {}
            for transport in ("plain", "tls"):
                log(f"big message via mailtee ({transport})")
                result["big_message"][transport] = big_retr(*via[transport], pid, args.big_mb * MB)

            cases: list[dict[str, Any]] = []
            for transport in args.transports:
                for sessions in args.sessions:
                    rounds = []
                    for r in range(args.rounds):
                        log(f"{transport}, {sessions} session(s), round {r + 1}: direct")
                        d = run_clients(*direct[transport], args.messages, sessions, args.size)
                        log(f"{transport}, {sessions} session(s), round {r + 1}: via mailtee")
                        before = mpr_names(reports_dir)
                        b0 = commit_counters(state)
                        cpu0 = split_cpu_seconds(pid)
                        m = run_clients(*via[transport], args.messages, sessions, args.size)
                        cpu1 = split_cpu_seconds(pid)
                        b1 = commit_counters(state)
                        m["loadavg_1m"] = round(os.getloadavg()[0], 2)
                        if b1[1] > b0[1]:
                            n = b1[1] - b0[1]
                            m["barriers_per_retr"] = round((b1[0] - b0[0]) / n, 3)
                            # per RETR: the wait for the barrier (queue to release), the
                            # committer's work and flush calls, the retiring's flushing
                            m["commit_ms_per_retr"] = {
                                k: round((b1[2][k] - b0[2][k]) / n, 3) for k in TIMINGS
                            }
                        new = new_reports(reports_dir, before, args.messages)
                        spent = {k: (cpu1[k] - cpu0[k]) / args.messages * 1e3 for k in cpu0}
                        m["mailtee_cpu_ms_per_retr"] = round(sum(spent.values()), 3)
                        # of which: the relay (on the RETR's path) and the pair writers
                        m["cpu_ms_per_retr_split"] = {k: round(v, 3) for k, v in spent.items()}
                        m["archive"] = check_reports(reports_dir, new, expected)
                        m["all_archived"] = (
                            m["archive"]["reports"] == args.messages
                            and m["archive"]["outcomes"].get("delivered") == args.messages
                            and m["archive"]["content_errors"] == 0
                            and m["archive"]["distinct_messages"] == args.messages
                            and m["archive"]["distinct_msg_numbers"] == args.messages
                            and "errors" not in m
                        )
                        ratio = round(m["retr_per_s"] / d["retr_per_s"], 4)
                        one: dict[str, Any] = {"direct": d, "mailtee": m, "ratio": ratio}
                        if transport == "plain" and floors:
                            one["floors"] = run_floors(floors, args, sessions, d, m, work, expected)
                        rounds.append(one)
                        log(
                            f"  direct {d['retr_per_s']}/s, mailtee {m['retr_per_s']}/s, "
                            f"ratio {ratio}, archived ok: {m['all_archived']} "
                            f"(steal {d['host']['steal_pct']} / {m['host']['steal_pct']} %)"
                        )
                    cases.append(
                        {
                            "transport": transport,
                            "sessions": sessions,
                            "median_direct_retr_per_s": statistics.median(
                                x["direct"]["retr_per_s"] for x in rounds
                            ),
                            "median_mailtee_retr_per_s": statistics.median(
                                x["mailtee"]["retr_per_s"] for x in rounds
                            ),
                            "median_direct_mb_per_s": statistics.median(
                                x["direct"]["mb_per_s"] for x in rounds
                            ),
                            "median_mailtee_mb_per_s": statistics.median(
                                x["mailtee"]["mb_per_s"] for x in rounds
                            ),
                            "median_ratio": statistics.median(x["ratio"] for x in rounds),
                            **floor_medians(rounds),
                            "rounds": rounds,
                        }
                    )
            result["throughput"] = cases
            result["rss_after_throughput_mb"] = round(rss_kib(pid) * KB / MB, 2)
            result["tmp_files_left"] = len(list(reports_dir.glob(".*.tmp")))
    finally:
        stop(proxy)
        for _, floor in floors.values():
            stop(floor)
        if phases_file is not None and phases_file.exists():
            result["phases"] = phases_summary(phases_file, args.messages * args.rounds)
            if result.get("throughput"):
                # what one RETR would take if the relay's own phases cost nothing
                waits = result["phases"]["by_kind_us_per_retr"]
                rest = sum(v for k, v in waits.items() if k != "relay")
                direct = result["throughput"][0]["median_direct_retr_per_s"]
                result["phases"]["ratio_if_the_relay_cost_nothing"] = (
                    round(1e6 / rest / direct, 3) if rest else None
                )
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    big = result["big_message"]
    checks: dict[str, bool] = {
        f"ratio_{c['transport']}_{c['sessions']}_sessions": c["median_ratio"]
        >= TARGETS["ratio_to_direct_min_1_session" if c["sessions"] == 1 else "ratio_to_direct_min"]
        for c in result["throughput"]
    }
    checks["big_message_rss_growth"] = all(
        b["rss_growth_mb"] <= TARGETS["big_message_rss_growth_mb_max"] for b in big.values()
    )
    checks["all_archived"] = (
        all(r["mailtee"]["all_archived"] for c in result["throughput"] for r in c["rounds"])
        and result["tmp_files_left"] == 0
    )
    result["pass"] = checks
    result["all_pass"] = all(checks.values())
    emit(result)
    return 0 if checks["all_archived"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
