"""Shared helpers for the benchmarks in bench/ (not a test module; no timing asserts).

- `free_port()`, `wait_port()`: loopback ports for the peers a benchmark starts.
- `start_smtp_sink()`: Postfix's smtp-sink without a dump file (it discards messages, so
  the sink is never the bottleneck).
- `RssSampler`, `rss_kib()`, `cpu_seconds()`: memory and CPU of another process, read
  from /proc (no psutil dependency).
- `machine_info()`, `filesystem_of()`: what the figures were measured on;
  `host_cpu()` / `host_shares()`: how the machine's CPU time went during a run (steal:
  time the hypervisor gave another guest, which no ratio of two runs cancels out).
- `work_dir()`: a benchmark's scratch directory, in a fresh ext4 block group.
- `percentile()`, `emit()`: figures and the one JSON object a benchmark prints.
- `python bench/_common.py serve --config FILE [--ready FILE] [--cprofile FILE]
  [--phases FILE]`: runs
  the mailtee listeners (`proxy.serve.serve_listeners`) of a config in this process
  until SIGTERM/SIGINT, writing `{"pid":..,"ports":{..}}` to the ready file once bound.
  Benchmarks start it with `subprocess` so the proxy has its own interpreter (and GIL),
  like `proxy-admin run`, and so its RSS can be sampled alone. The background ingest
  task of `proxy-admin run` is deliberately not started: the relay path is measured,
  the archive ingest has its own benchmark.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- ports and peers --------------------------------------------------------------------


def free_port() -> int:
    """A free loopback port, never one handed out lately in this process: the tests'
    tests/fixtures/net.free_port (the kernel may offer a port again as soon as its probe
    socket closes, and a bench that draws two in a row would start two peers on one)."""
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    from fixtures.net import free_port as fixture_free_port

    return fixture_free_port()


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Wait until something accepts on host:port (and sends its greeting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                s.recv(512)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def find_tool(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit(f"{name} not found (install the postfix package)")


def start_smtp_sink(port: int, backlog: int = 1000) -> subprocess.Popen[bytes]:
    """Postfix smtp-sink on 127.0.0.1:port: accepts everything, stores nothing."""
    cmd = [find_tool("smtp-sink")]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root without it
    cmd += ["-m", "1000", f"127.0.0.1:{port}", str(backlog)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port)
    except RuntimeError:
        proc.kill()
        raise
    return proc


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Terminate a process this benchmark started (by its own handle, never by name)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- /proc ------------------------------------------------------------------------------


def _one_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it (mailtee's worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return out


def rss_kib(pid: int) -> int:
    """VmRSS in KiB of a process and its children (supervisor + workers)."""
    total = 0
    for i, p in enumerate(descendants(pid)):
        try:
            total += _one_rss_kib(p)
        except (OSError, RuntimeError):
            if i == 0:
                raise
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (all its threads) has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _is_pair_writer(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"archive.pair_writer" in f.read()
    except OSError:
        return False


def split_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time of mailtee's process tree, split into the relay (supervisor and
    workers) and the pair writers (archive.pair_writer, one per worker): the first is on
    the acknowledgement path, the second writes the report files beside it."""
    out = {"relay": 0.0, "pair_writers": 0.0}
    for p in descendants(pid):
        try:
            cpu = cpu_seconds(p)
        except (OSError, ValueError):
            continue
        out["pair_writers" if _is_pair_writer(p) else "relay"] += cpu
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and all its descendants that are alive (worker processes)."""
    return sum(split_cpu_seconds(pid).values())


class RssSampler:
    """Samples VmRSS of `pid` every `interval` seconds in a thread; `with` starts/stops."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(rss_kib(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_kib(self) -> int:
        return max(self.samples) if self.samples else 0


# --- machine and figures ----------------------------------------------------------------


def filesystem_of(path: Path) -> dict[str, str]:
    """The mount (device, mount point, type) holding `path`, from /proc/mounts."""
    real = os.path.realpath(path)
    best = {"device": "?", "mount": "/", "type": "?"}
    best_len = -1
    try:
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, fstype = line.split()[:3]
                mnt = mnt.replace("\\040", " ")
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) > best_len:
                    best, best_len = {"device": dev, "mount": mnt, "type": fstype}, len(mnt)
    except OSError:
        pass
    return best


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["loadavg_1m_at_start"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def host_cpu() -> list[int]:
    """The machine's CPU time so far, in ticks per `_STAT_FIELDS` (/proc/stat "cpu")."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1 : 1 + len(_STAT_FIELDS)]]


def host_shares(before: list[int], after: list[int]) -> dict[str, float]:
    """Per cent of all CPUs' time between two `host_cpu()` readings: `steal` is what the
    hypervisor ran elsewhere while this guest wanted the CPU (on a shared VM it rises and
    falls within minutes, and every figure of the run with it), `idle` what nobody used."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta) or 1
    shares = dict(zip(_STAT_FIELDS, delta, strict=True))
    return {
        "steal_pct": round(100 * shares["steal"] / total, 1),
        "idle_pct": round(100 * (shares["idle"] + shares["iowait"]) / total, 1),
    }


def work_dir(parent: Path, prefix: str) -> Path:
    """A new scratch directory under `parent`, in a fresh ext4 block group.

    Why: on an ext4 without a journal (this project's development VMs), the inode
    allocator skips every inode freed in the last 60 to 360 seconds (fs/ext4/ialloc.c,
    `recently_deleted`), one buffer lookup each, starting from the group's first inode.
    A directory created next to the one the previous run deleted lands in the same group,
    so each of this run's file creations walks over the tens of thousands of inodes the
    last run freed (measured: the pair writer's CPU per 50 KB message 0.46-0.73 ms right
    after a run, 0.2 ms in a fresh group). The shared parent `parent/.mailtee-bench` has
    ext4's "top of directory hierarchy" attribute (`chattr +T`), so the allocator spreads
    its subdirectories over the block groups as it does top-level ones. Elsewhere (no
    chattr, another file system) it is an ordinary directory.
    """
    base = parent / ".mailtee-bench"
    base.mkdir(parents=True, exist_ok=True)
    chattr = shutil.which("chattr")
    if chattr:
        subprocess.run([chattr, "+T", str(base)], capture_output=True, check=False)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def emit(obj: dict[str, Any]) -> None:
    """Print the benchmark's one JSON object on stdout."""
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    sys.stdout.flush()


def log(msg: str) -> None:
    """Progress for the operator; stderr, so stdout stays one JSON object."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --- the mailtee runner -----------------------------------------------------------------


def start_mailtee(
    config_path: Path,
    workdir: Path,
    *,
    cprofile: Path | None = None,
    phases: Path | None = None,
    timeout: float = 30.0,
    ingest: bool = False,
) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    """Start `_common.py serve` for config_path; return (process, listener ports)."""
    ready = workdir / "mailtee.ready"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "serve", "--config", str(config_path)]
    cmd += ["--ready", str(ready)]
    if cprofile is not None:
        cmd += ["--cprofile", str(cprofile)]
    if phases is not None:
        cmd += ["--phases", str(phases)]
    if ingest:
        cmd += ["--ingest"]
    logfile = open(workdir / "mailtee.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(cmd, stdout=logfile, stderr=logfile, cwd=REPO)
    logfile.close()
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"mailtee exited with {proc.returncode}; see {workdir}/mailtee.log")
        if time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"mailtee did not start in {timeout}s")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    return proc, info["ports"]


def _serve_main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="_common.py serve")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--ready", type=Path)
    p.add_argument("--cprofile", type=Path, help="write cProfile stats of the Trio thread here")
    p.add_argument("--ingest", action="store_true", help="run the ingest task too (workers > 1)")
    p.add_argument("--phases", type=Path, help="write bench/phases.py's step timings here")
    args = p.parse_args(argv)

    sys.path.insert(0, str(REPO))
    import trio

    if args.phases is not None:
        sys.path.insert(0, str(REPO / "bench"))
        import phases

        phases.install(args.phases)

    from admin.cli_common import setup_logging
    from admin.config import load_config, load_secrets
    from admin.config import state_dir as resolve_state_dir
    from proxy.serve import serve_listeners

    config = load_config(args.config)
    secrets = load_secrets(args.config)
    state = resolve_state_dir(config, args.config)
    setup_logging(config.log_level)  # same log volume as `proxy-admin run`

    if config.workers != 1:  # the worker processes of `proxy-admin run`, no ingest task
        import proxy.service_common
        import proxy.workers as workers

        if not args.ingest:  # run_supervisor imports it from proxy.service_common
            proxy.service_common.start_service_tasks = lambda *a: None  # type: ignore[assignment]

        async def supervised() -> None:
            async with trio.open_nursery() as nursery:
                sup = await nursery.start(
                    partial(workers.run_supervisor, config, secrets, args.config)
                )
                if args.ready is not None:
                    ports = {n: r.port for n, r in sup.reservations.items()}
                    tmp = args.ready.with_suffix(".tmp")
                    tmp.write_text(json.dumps({"pid": os.getpid(), "ports": ports}))
                    os.replace(tmp, args.ready)

        trio.run(supervised)
        return

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            service = await nursery.start(serve_listeners, config, secrets, state)
            if args.ready is not None:
                tmp = args.ready.with_suffix(".tmp")
                tmp.write_text(json.dumps({"pid": os.getpid(), "ports": service.ports}))
                os.replace(tmp, args.ready)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                async for _ in sigs:
                    nursery.cancel_scope.cancel()
                    break

    if args.cprofile is None:
        trio.run(main)
        return
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        trio.run(main)
    finally:
        prof.disable()
        prof.dump_stats(str(args.cprofile))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        _serve_main(sys.argv[2:])
    else:
        raise SystemExit("usage: python bench/_common.py serve --config FILE [--ready FILE]")
