"""Web benchmark: search and message pages over HTTPS with 10 concurrent clients, the RSS
of the web server while it streams a 50 MB attachment, against `proxy-admin search`.

    python bench/web.py [--work var/bench-web] [--count 100000] [--clients 10]
                        [--requests 400] [--workers 2] [--build-only]

The store (100,000 messages from bench/corpus.py, plus one 100 KB message and one with a
50 MB attachment) is built once under WORK and reused; the build time is reported (and
kept in WORK/build.json). The web server is the real one (`python -m web ... web serve`,
as `proxy-admin run` starts it: `--workers` processes sharing the port); each client is a
thread with a keep-alive HTTPS connection and its own login. "Server time" is what the
app reports in its `Server-Timing: app;dur=` header (request in to response headers out,
for streamed bodies the first chunk); client-side latency is reported too. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import re
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import corpus  # noqa: E402
from _common import cpu_seconds, free_port, machine_info, percentile, rss_kib  # noqa: E402

from archive.logins import set_password, set_role  # noqa: E402
from archive.store import Archive  # noqa: E402
from archive.users import UserSpec, add_user  # noqa: E402

PASSWORD = "bench-password-1"
BIG_ATTACHMENT = 50 * 1024 * 1024
MSG_100K = 100 * 1024


def proxy_admin(work: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("proxy-admin")
    return subprocess.run(
        [str(exe), "--config", str(work / "config.toml"), *args],
        capture_output=True,
        text=True,
        check=True,
        **kw,
    )


def _b64_lines(data: bytes) -> bytes:
    import base64

    enc = base64.b64encode(data)
    return b"".join(enc[i : i + 76] + b"\r\n" for i in range(0, len(enc), 76))


def extra_messages() -> dict[str, bytes]:
    rng = random.Random(13)
    words = ["invoice", "meeting", "請求書", "schedule", "report", "budget", "見積書", "確認"]
    lines, size = [], 0
    while size < MSG_100K - 1200:
        line = " ".join(rng.choice(words) for _ in range(12))
        lines.append(line)
        size += len(line.encode()) + 2
    text = "\r\n".join(lines).encode()
    head = (
        b"From: Bench Sender <sender@bench.example>\r\nTo: bench@bench.example\r\n"
        b"Subject: bench 100k message\r\nMessage-ID: <bench-100k@bench.example>\r\n"
        b"Date: Mon, 30 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    hundred = head + text + b"\r\n"
    big = (
        b"From: Bench Sender <sender@bench.example>\r\nTo: bench@bench.example\r\n"
        b"Subject: bench 50 MB attachment\r\nMessage-ID: <bench-50m@bench.example>\r\n"
        b"Date: Mon, 30 Nov 2026 09:01:00 +0000\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b50"\r\n\r\n'
        b"--b50\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        b"--b50\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="big.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + _b64_lines(random.Random(50).randbytes(BIG_ATTACHMENT))
        + b"--b50--\r\n"
    )
    return {"100k.eml": hundred, "50m.eml": big}


def build(work: Path, count: int) -> dict[str, Any]:
    marker = work / "build.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("count") == count:
            info["reused"] = True
            return info
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "config.toml").exists():
        proxy_admin(work, "init", "--state-dir", "store", "--hostname", "localhost")
    info: dict[str, Any] = {"count": count}
    t = time.perf_counter()
    maildir = work / "maildir"
    have = len(list((maildir / "cur").iterdir())) if (maildir / "cur").is_dir() else 0
    if have < count:
        info["corpus"] = corpus.generate(maildir, count)
    info["corpus_seconds"] = round(time.perf_counter() - t, 1)
    extras = work / "extras"
    extras.mkdir(exist_ok=True)
    for name, data in extra_messages().items():
        (extras / name).write_bytes(data)
    t = time.perf_counter()
    with Archive(work / "store") as archive:
        done = [0]

        def progress(n: int, total: int) -> None:
            if n - done[0] >= 5000 or n == total:
                done[0] = n
                print(f"bench/web: ingested {n}/{total}", file=sys.stderr, flush=True)

        archive.import_path(maildir, progress=progress)
        archive.import_path(extras)
        info["messages"] = archive.count()
        add_user(archive.catalog, UserSpec("bench", ["bench@bench.example"]))
        add_user(archive.catalog, UserSpec("audit", ["audit@bench.example"]))
        for name in ("bench", "audit"):
            set_password(archive.catalog, name, PASSWORD)
        set_role(archive.catalog, "audit", "auditor")
    info["ingest_seconds"] = round(time.perf_counter() - t, 1)
    marker.write_text(json.dumps(info))
    info["reused"] = False
    return info


# --- the client side ------------------------------------------------------------------


class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the bench's self-signed appliance certificate
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=120)
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, body: bytes | None = None, stream: bool = False
    ) -> tuple[int, dict[str, str], bytes, float, float]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        t = time.perf_counter()
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = b"" if stream else resp.read()
        elapsed = time.perf_counter() - t
        for raw in resp.headers.get_all("Set-Cookie") or []:
            k, _, rest = raw.partition("=")
            self.cookies[k] = rest.split(";", 1)[0]
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        m = re.search(r"app;dur=([\d.]+)", hdrs.get("server-timing", ""))
        server = float(m.group(1)) if m else float("nan")
        if stream:
            self._resp = resp
        return resp.status, hdrs, data, elapsed * 1000, server

    def login(self, name: str) -> None:
        _s, _h, page, _e, _t = self.request("GET", "/login")
        token = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()  # type: ignore[union-attr]
        form = urllib.parse.urlencode(
            {"csrf": token, "login": name, "password": PASSWORD, "next": "/search"}
        ).encode()
        status, *_ = self.request("POST", "/login", form)
        assert status == 303, status


def run_clients(port: int, n: int, jobs: list[str], user: str) -> dict[str, Any]:
    """`n` clients share the job list (paths); per-path-kind timings and requests/s."""
    lock = threading.Lock()
    queue = list(reversed(jobs))
    results: list[tuple[str, float, float, int]] = []
    clients = []
    for _ in range(n):
        c = Client(port)
        c.login(user)
        clients.append(c)

    def work(c: Client) -> None:
        while True:
            with lock:
                if not queue:
                    return
                path = queue.pop()
            status, _h, _body, ms, server = c.request("GET", path)
            kind = "search" if path.startswith("/search") else "message"
            with lock:
                results.append((kind, ms, server, status))

    t = time.perf_counter()
    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    out: dict[str, Any] = {
        "requests": len(results),
        "seconds": round(wall, 2),
        "requests_per_s": round(len(results) / wall, 1),
        "errors": sum(1 for r in results if r[3] != 200),
    }
    for kind in ("search", "message"):
        rows = [r for r in results if r[0] == kind]
        if not rows:
            continue
        server = [r[2] for r in rows]
        client = [r[1] for r in rows]
        out[kind] = {
            "n": len(rows),
            "server_p50_ms": round(statistics.median(server), 1),
            "server_p95_ms": round(percentile(server, 95), 1),
            "client_p50_ms": round(statistics.median(client), 1),
            "client_p95_ms": round(percentile(client, 95), 1),
        }
    return out


def big_download(port: int, pids: list[int], mid: int, part: int) -> dict[str, Any]:
    """RSS of every worker before and at its peak while one of them streams the file."""
    c = Client(port)
    c.login("audit")
    base = {p: rss_kib(p) for p in pids}
    peaks = dict(base)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for p in pids:
                peaks[p] = max(peaks[p], rss_kib(p))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t = time.perf_counter()
    status, _h, _b, _ms, _server = c.request("GET", f"/message/{mid}/part/{part}", stream=True)
    h = hashlib.sha256()
    size = 0
    while True:
        chunk = c._resp.read(256 * 1024)
        if not chunk:
            break
        size += len(chunk)
        h.update(chunk)
    seconds = time.perf_counter() - t
    stop.set()
    sampler.join()
    expected = hashlib.sha256(random.Random(50).randbytes(BIG_ATTACHMENT)).hexdigest()
    return {
        "status": status,
        "bytes": size,
        "sha256_ok": h.hexdigest() == expected,
        "seconds": round(seconds, 2),
        "mb_per_s": round(size / seconds / 1e6, 1),
        "rss_before_mb": [round(base[p] / 1024, 1) for p in pids],
        "rss_peak_mb": [round(peaks[p] / 1024, 1) for p in pids],
        "rss_growth_mb": round(max(peaks[p] - base[p] for p in pids) / 1024, 1),
    }


def cli_search(work: Path, queries: list[str]) -> dict[str, Any]:
    times = []
    for q in queries:
        t = time.perf_counter()
        proxy_admin(work, "search", q, "--limit", "50")
        times.append((time.perf_counter() - t) * 1000)
    return {
        "n": len(times),
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(percentile(times, 95), 1),
    }


def wait_listening(port: int, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the web server is not listening on {port}") from None
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "var" / "bench-web")
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--requests", type=int, default=400, help="per page kind")
    ap.add_argument("--workers", type=int, default=2, help="web processes ([web] workers)")
    ap.add_argument("--build-only", action="store_true")
    args = ap.parse_args()
    work = args.work.resolve()
    info = build(work, args.count)
    print(f"bench/web: store ready: {json.dumps(info)}", file=sys.stderr, flush=True)
    if args.build_only:
        return
    port = free_port()
    cfg = (work / "config.toml").read_text()
    cfg = re.sub(r"(?ms)^\[web\].*?(?=^\[|\Z)", "", cfg)
    cfg += f'\n[web]\nenabled = true\nlisten = "127.0.0.1"\nport = {port}\n'
    (work / "config.toml").write_text(cfg)
    log = open(work / "web.log", "wb")  # noqa: SIM115
    servers = [  # as `proxy-admin run` starts them: `[web] workers` processes, one port
        subprocess.Popen(
            [sys.executable, "-m", "web", "--config", str(work / "config.toml"), "web", "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(args.workers)
    ]
    pids = [p.pid for p in servers]
    try:
        wait_listening(port, timeout=60)
        with Archive(work / "store") as archive:
            ids = {
                r["subject"]: r["id"]
                for r in archive.catalog.query(
                    "SELECT id, subject FROM messages WHERE subject LIKE 'bench %'"
                )
            }
            sample = [
                r["id"]
                for r in archive.catalog.query(
                    "SELECT id FROM messages WHERE size < 200000 ORDER BY random() LIMIT 200"
                )
            ]
        import search as search_bench

        qs = search_bench.queries(40)
        flat = [q for group in qs.values() for q in group]
        rng = random.Random(3)
        m100 = ids["bench 100k message"]
        jobs = [
            "/search?" + urllib.parse.urlencode({"q": rng.choice(flat)})
            for _ in range(args.requests)
        ]
        jobs += [f"/message/{m100}" for _ in range(args.requests)]
        rng.shuffle(jobs)
        warm = run_clients(port, 2, jobs[:40], "audit")  # page cache, index readers
        single = run_clients(port, 1, jobs[:200], "audit")  # the same pages, no queueing
        cpu0 = sum(cpu_seconds(p) for p in pids)
        mixed = run_clients(port, args.clients, jobs, "audit")
        mixed["server_cpu_ms_per_request"] = round(
            (sum(cpu_seconds(p) for p in pids) - cpu0) * 1000 / mixed["requests"], 2
        )
        sampled = run_clients(port, args.clients, [f"/message/{m}" for m in sample], "audit")
        user_scope = run_clients(
            port,
            args.clients,
            ["/search?" + urllib.parse.urlencode({"q": q}) for q in flat[:100]],
            "bench",
        )
        big = big_download(port, pids, ids["bench 50 MB attachment"], 2)
        cli = cli_search(work, flat[:20])
    finally:
        for proc in servers:
            proc.terminate()
        for proc in servers:
            proc.wait(timeout=30)
        log.close()
    out = {
        "bench": "web",
        "machine": machine_info(),
        "store": info,
        "clients": args.clients,
        "workers": args.workers,
        "warmup_requests": warm["requests"],
        "one_client": single,
        "mixed_100k_message_and_search": mixed,
        "random_messages": sampled,
        "search_as_user": user_scope,
        "download_50mb_attachment": big,
        "cli_search_whole_command": cli,
        "ratios": {
            "cli_p50_over_web_search_server_p50": round(
                cli["p50_ms"] / mixed["search"]["server_p50_ms"], 1
            ),
            "cli_p50_over_web_search_client_p50": round(
                cli["p50_ms"] / mixed["search"]["client_p50_ms"], 1
            ),
        },
        "targets": {
            "search_server_p95_ms": 50,
            "message_server_p95_ms": 50,
            "rss_growth_mb": 32,
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
