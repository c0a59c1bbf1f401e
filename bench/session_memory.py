"""Memory over thousands of fuzzed sessions through the real listener (issue 10 item 10).

Prints ONE JSON object on stdout (progress goes to stderr). The service runs in its own
process (`bench/_common.py serve`, as in bench/load.py: durable archiving into a temp
state dir) in front of Postfix's `smtp-sink`, with an SMTP and an implicit-TLS SMTP
listener; its VmRSS alone is sampled. With `--trace` (or `--in-process`) it runs in this
process instead, in a Trio thread, so that tracemalloc can see it (RSS then includes the
client threads, and the traced total is sampled too: it shows whether Python objects
grow at all). Client threads open `--sessions` sessions, each a valid SMTP session
mutated at random (bytes flipped, inserted, cut; NUL/CR/LF; TLS garbage; hang-ups;
pipelined RCPTs; big bodies; 100 kB lines) and sent in random chunks.

    .venv/bin/python bench/session_memory.py                   # 10,000 sessions
    .venv/bin/python bench/session_memory.py --sessions 2000 --trace
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import ssl
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - bench/ is not a package
    REPO,
    emit,
    free_port,
    log,
    rss_kib,
    start_smtp_sink,
    stop,
)

sys.path.insert(0, str(REPO))

VALID = [
    b"EHLO fuzz.test\r\n",
    b"MAIL FROM:<a@example.org> SIZE=300\r\n",
    b"RCPT TO:<b@example.net>\r\n",
    b"RCPT TO:<c@example.net>\r\n",
    b"DATA\r\n",
    b"From: a@example.org\r\nSubject: fuzz %d\r\nMessage-ID: <%d@fuzz.test>\r\n\r\n",
    b"body line\r\n..dot\r\n" * 5,
    b".\r\n",
    b"RSET\r\nNOOP\r\n",
    b"QUIT\r\n",
]


def fuzzed(rng: random.Random, n: int) -> list[bytes]:
    """One session's client bytes, as a list of chunks to send."""
    parts = [p.replace(b"%d", str(n).encode()) for p in VALID]
    data = bytearray(b"".join(parts))
    if rng.random() < 0.1:  # a big message body (the DATA path at full chunk size)
        at = data.find(b"body line")
        data[at:at] = (b"x" * 998 + b"\r\n") * rng.randrange(100, 3000)
    if rng.random() < 0.05:  # a very long line (no CRLF for 100 kB+)
        data[0:0] = rng.randbytes(1).hex().encode() * rng.randrange(50_000, 200_000)
    for _ in range(rng.randrange(0, 6)):
        op = rng.randrange(5)
        i = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(i, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[i:i] = rng.randbytes(rng.randrange(1, 40))
        elif op == 2:
            del data[i:]
            if not data:
                data += b"QUIT\r\n"
        elif op == 3:
            data[i:i] = rng.choice([b"\n", b"\r", b"\x00", b"DATA\r\n", b"STARTTLS\r\n"])
        else:
            data[i:i] = b"RCPT TO:<x@example.net>\r\n" * rng.randrange(1, 30)
    chunks, pos = [], 0
    while pos < len(data):
        step = rng.choice([1, 7, 64, 512, 4096, 65536, 262144])
        chunks.append(bytes(data[pos : pos + step]))
        pos += step
    return chunks


def one_session(port: int, tls_port: int, rng: random.Random, n: int) -> None:
    use_tls = rng.random() < 0.2
    try:
        sock = socket.create_connection(("127.0.0.1", tls_port if use_tls else port), timeout=5)
    except OSError:
        return
    try:
        if use_tls:
            if rng.random() < 0.3:
                sock.sendall(rng.randbytes(rng.randrange(1, 300)))  # not a ClientHello
                sock.shutdown(socket.SHUT_WR)
                sock.recv(4096)
                return
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
        sock.settimeout(3)
        sock.recv(4096)  # greeting
        chunks = fuzzed(rng, n)
        hang_up = rng.random() < 0.2
        for k, chunk in enumerate(chunks):
            if hang_up and k > len(chunks) // 2:
                return
            sock.sendall(chunk)
        sock.settimeout(2)
        while sock.recv(65536):
            pass
    except OSError:
        pass
    finally:
        sock.close()


def write_state(state: Path) -> None:
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    tls = state / "tls"
    tls.mkdir(parents=True)
    leaf.private_key_pem.write_to_path(str(tls / "key.pem"))
    for i, pem in enumerate(leaf.cert_chain_pems):
        pem.write_to_path(str(tls / "cert.pem"), append=i > 0)
    (state / "reports").mkdir()


def run_service(config: Any, state: Path, started: threading.Event, out: dict) -> None:
    import trio

    from admin.config import Secrets
    from proxy.serve import serve_listeners

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            service = await nursery.start(serve_listeners, config, Secrets(), state)
            out["ports"] = dict(service.ports)
            out["service"] = service
            token = trio.lowlevel.current_trio_token()
            out["cancel"] = lambda: trio.from_thread.run_sync(
                nursery.cancel_scope.cancel, trio_token=token
            )
            started.set()

    trio.run(main)


def serve_main(argv: list[str]) -> None:
    """`session_memory.py serve CONFIG READY [--untuned]`: the service in its own process;
    `--untuned` turns proxy/memory.py off (the alternative measured in the same run)."""
    import json
    import logging
    import signal

    import trio

    sys.path.insert(0, str(REPO))
    from admin.config import Secrets, load_config
    from proxy import memory
    from proxy.serve import serve_listeners

    logging.basicConfig(level=logging.ERROR)  # as log_level = "error": no warning spam
    config_path, ready = Path(argv[0]), Path(argv[1])
    if "--untuned" in argv:

        async def no_trim() -> None:
            return None

        memory.configure = lambda: False  # type: ignore[assignment]
        memory.trim_loop = no_trim  # type: ignore[assignment]
    config = load_config(config_path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            service = await nursery.start(
                serve_listeners, config, Secrets(), Path(config.state_dir)
            )
            ready.write_text(json.dumps({"ports": service.ports}))  # noqa: ASYNC240 - once
            with trio.open_signal_receiver(signal.SIGTERM) as sigs:
                async for _ in sigs:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)


def start_variant(config_path: Path, tmp: Path, untuned: bool) -> tuple[Any, dict]:
    import json
    import subprocess

    ready = tmp / ("ready-untuned" if untuned else "ready-tuned")
    cmd = [sys.executable, __file__, "serve", str(config_path), str(ready)]
    proc = subprocess.Popen([*cmd, *(["--untuned"] if untuned else [])], cwd=REPO)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise SystemExit("the service did not start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["ports"]


def top_growth(first: tracemalloc.Snapshot, now: tracemalloc.Snapshot, n: int = 12) -> list:
    """The allocation sites (with the project frames that led there) that grew most."""
    stats = now.compare_to(first, "traceback")
    out = []
    for s in stats[:n]:
        frames = [
            f"{os.path.relpath(f.filename, REPO)}:{f.lineno}"
            for f in s.traceback
            if "site-packages" not in f.filename or f is s.traceback[-1]
        ]
        out.append(
            {"where": frames[-6:], "grew_kib": round(s.size_diff / 1024, 1), "count": s.count_diff}
        )
    return out


def drive(args: argparse.Namespace, ports: dict, pid: int) -> dict[str, Any]:
    """Run the fuzzed sessions against `ports`; RSS of `pid` sampled along the way."""
    port, tls_port = ports["smtp"], ports["smtps"]
    samples = [{"sessions": 0, "rss_kib": rss_kib(pid)}]
    done = 0
    lock = threading.Lock()
    t0 = time.monotonic()

    def worker(w: int) -> None:
        nonlocal done
        rng = random.Random(args.seed * 1000 + w)
        while True:
            with lock:
                if done >= args.sessions:
                    return
                done += 1
                n = done
            one_session(port, tls_port, rng, n)
            if n % args.every == 0:
                with lock:
                    sample = {"sessions": n, "rss_kib": rss_kib(pid)}
                    if tracemalloc.is_tracing():
                        sample["traced_kib"] = tracemalloc.get_traced_memory()[0] // 1024
                    samples.append(sample)
                log(f"{n} sessions, rss {samples[-1]['rss_kib']} KiB")

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    time.sleep(3)  # idle timeouts of the last sessions
    settled = rss_kib(pid)
    time.sleep(args.idle)  # a quiet spell: long enough for one trim (memory.TRIM_INTERVAL)
    return {
        "seconds": round(elapsed, 1),
        "rss_kib_first": samples[0]["rss_kib"],
        "rss_kib_peak": max(x["rss_kib"] for x in samples),
        "rss_kib_settled": settled,
        "rss_kib_after_idle": rss_kib(pid),
        "rss_samples": samples,
    }


def config_for(state: Path, sink_port: int) -> Any:
    from admin.config import Config, Limits, ListenerConfig

    write_state(state)
    return Config(
        hostname="mailtee.test",
        state_dir=str(state),
        log_level="error",
        limits=Limits(idle_timeout=2, upstream_timeout=10, max_connections=200),
        listener=[
            ListenerConfig(name="smtp", protocol="smtp", listen="127.0.0.1", port=0,
                           target_host="127.0.0.1", target_port=sink_port),
            ListenerConfig(name="smtps", protocol="smtp", listen="127.0.0.1", port=0,
                           client_tls="implicit", target_host="127.0.0.1",
                           target_port=sink_port),
        ],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        serve_main(argv[1:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=10_000, help="per variant")
    p.add_argument("--threads", type=int, default=64)
    p.add_argument("--every", type=int, default=1000, help="sample RSS every N sessions")
    p.add_argument("--idle", type=float, default=35.0, help="quiet seconds after the load")
    p.add_argument("--trace", action="store_true", help="in this process, with tracemalloc")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    from admin.config import save_config

    sink_port = free_port()
    sink = start_smtp_sink(sink_port)
    tmp = Path(tempfile.mkdtemp(prefix="mailtee-memory-", dir="/var/tmp"))
    result: dict[str, Any] = {"benchmark": "session_memory", "sessions": args.sessions}
    try:
        if args.trace:
            tracemalloc.start(12)
            config = config_for(tmp / "state", sink_port)
            started, out = threading.Event(), {}
            server = threading.Thread(
                target=run_service, args=(config, tmp / "state", started, out)
            )
            server.start()
            started.wait(30)
            first = tracemalloc.take_snapshot()
            result["in_process"] = drive(args, out["ports"], os.getpid())
            result["top_growth"] = top_growth(first, tracemalloc.take_snapshot())
            out["cancel"]()
            server.join(30)
        else:
            for name, untuned in (("untuned", True), ("tuned", False)):
                variant = tmp / name
                variant.mkdir()
                config_path = variant / "config.toml"
                save_config(config_for(variant / "state", sink_port), config_path)
                proc, ports = start_variant(config_path, variant, untuned)
                try:
                    result[name] = drive(args, ports, proc.pid)
                finally:
                    stop(proc)
            u, t = result["untuned"], result["tuned"]
            result["ratio_after_idle_tuned_vs_untuned"] = round(
                (t["rss_kib_after_idle"] - t["rss_kib_first"])
                / max(1, u["rss_kib_after_idle"] - u["rss_kib_first"]),
                3,
            )
    finally:
        stop(sink)
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
