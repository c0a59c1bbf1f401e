"""Where a RETR's wall-clock time goes, step by step, in the relay process (bench only).

Why: CPU profiles (cProfile, py-spy, perf) say what the relay spends CPU on, not what a
client waits for. With one session the RETRs are strictly serial, so the time between
two consecutive steps of the Trio thread *is* the critical path: the sum of all phases
is the run's wall time, and the phases that are waits (for Dovecot, for the client, for
the barrier) show how much a relay with no Python at all could still save.

`install(out)` wraps, in the mailtee process that `_common.py serve --phases FILE`
runs, the driver's and the commit path's own functions (no product code knows about
it), and records a time stamp before and after each: the socket receive (by side), the cores'
`receive_client`/`receive_upstream`, each send, `open_message`, the commit's
`begin` and `finish` (and, inside, the barrier), the transaction log line. At exit it
writes `{"a>b": [nanoseconds, ...]}` for every pair of consecutive stamps; `summary()`
turns that into per-RETR medians. The cyclic garbage collector's passes are timed too
(`gc.callbacks`): they fall inside whatever phase was running, so `summary()` reports
them apart (`gc_passes`, by generation), not in the sum. Use it with one session and
`--workers 1` (one process, one Trio thread): with several sessions the stamps of
different RETRs interleave and the phases no longer add up to anyone's path.
"""

from __future__ import annotations

import atexit
import functools
import gc
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_phases: dict[str, list[int]] = {}
#: the cyclic garbage collector's passes, by generation: nanoseconds each (they fall
#: inside whatever phase was running: `summary()` reports them beside the phases)
_gc: dict[str, list[int]] = {}
_gc_started = [0]
_last: list[Any] = [None, 0]  # the previous stamp's name and time


def stamp(name: str) -> None:
    """End the current phase at `name` (the phase is named `previous>name`)."""
    now = time.perf_counter_ns()
    prev, at = _last
    if prev is not None:
        _phases.setdefault(f"{prev}>{name}", []).append(now - at)
    _last[0], _last[1] = name, now


def _around(owner: Any, attr: str, before: str, after: str) -> None:
    fn: Callable[..., Any] = getattr(owner, attr)

    @functools.wraps(fn)
    def sync(*args: Any, **kwargs: Any) -> Any:
        stamp(before)
        try:
            return fn(*args, **kwargs)
        finally:
            stamp(after)

    setattr(owner, attr, sync)


def _around_async(owner: Any, attr: str, before: str, after: str) -> None:
    fn: Callable[..., Any] = getattr(owner, attr)

    @functools.wraps(fn)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        stamp(before)
        try:
            return await fn(*args, **kwargs)
        finally:
            stamp(after)

    setattr(owner, attr, wrapped)


def install(out: Path) -> None:
    """Wrap the relay's steps (call before the listeners start)."""
    import archive.commit as commit
    import archive.spool as spool
    import proxy.session as session
    from proxy.pop3.relay import Pop3Relay

    # the streams to the provider, kept alive so that no client stream reuses an id
    # (a bench has a handful of sessions)
    upstream: dict[int, Any] = {}
    connect, wrap, receive = session.connect_tcp, session.wrap, session.receive_before

    async def connect_tcp(*args: Any, **kwargs: Any) -> Any:
        stream = await connect(*args, **kwargs)
        upstream[id(stream)] = stream
        return stream

    async def wrap_tls(stream: Any, *args: Any, **kwargs: Any) -> Any:
        tls = await wrap(stream, *args, **kwargs)
        if not kwargs.get("server_side"):
            upstream[id(tls)] = tls
        return tls

    async def receive_before(stream: Any, *args: Any) -> Any:
        side = "upstream" if id(stream) in upstream else "client"
        stamp(f"wait_{side}")
        try:
            return await receive(stream, *args)
        finally:
            stamp(f"received_{side}")

    session.connect_tcp, session.wrap = connect_tcp, wrap_tls  # type: ignore[assignment]
    session.receive_before = receive_before  # type: ignore[assignment]
    _around(Pop3Relay, "receive_client", "core_client", "core_client_done")
    _around(Pop3Relay, "receive_upstream", "core_upstream", "core_upstream_done")
    original_send = session.Session._send

    async def send(self: Any, side: Any, data: bytes) -> None:
        stamp(f"send_{side.value}")
        try:
            await original_send(self, side, data)
        finally:
            stamp(f"sent_{side.value}")

    session.Session._send = send  # type: ignore[method-assign]
    _around(spool.Spool, "open_message", "open_message", "opened")
    _around(commit.GroupCommitter, "begin", "commit_begin", "commit_begun")
    _around_async(commit.GroupCommitter, "finish", "commit_finish", "commit_finished")
    _around(commit.GroupCommitter, "_complete_batch", "barrier", "barrier_done")
    _around(session.Session, "_log_transaction", "log_line", "logged")

    def dump() -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({**_phases, **_gc}))
        os.replace(tmp, out)

    atexit.register(dump)
    gc.callbacks.append(_gc_callback)


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    now = time.perf_counter_ns()
    if phase == "start":
        _gc_started[0] = now
    else:
        _gc.setdefault(f"gc_gen{info['generation']}", []).append(now - _gc_started[0])
        if info["generation"] == 2:
            # how many objects were frozen then (proxy/memory.py): 0 = before start-up ended
            _gc.setdefault("gc_frozen_at_full_pass", []).append(gc.get_freeze_count())


#: the phases in which the relay waits for someone else; every other phase is the
#: relay's own work (its Python, and the system calls it makes itself)
KINDS = {
    "wait_upstream>received_upstream": "provider",
    "wait_client>received_client": "client",
    "barrier>barrier_done": "disk",
    "send_client>sent_client": "send",
    "send_upstream>sent_upstream": "send",
}


def summary(path: Path, retrs: int) -> dict[str, Any]:
    """Per-RETR figures (µs) of the phases seen at least once per two RETRs, largest
    share first: median, mean over the middle 98 %, time per RETR and share, and the
    kind of each phase (KINDS; `send` is a loopback send, which also runs the receiver's
    TCP processing and often hands the CPU to the woken peer)."""
    raw: dict[str, list[int]] = json.loads(path.read_text())
    rows = []
    total = 0.0
    gc_passes = {}
    frozen_at = raw.pop("gc_frozen_at_full_pass", [])
    for name, values in raw.items():
        if name.startswith("gc_gen"):
            # inside the phases already (not added to the sum): all of them, per RETR
            gc_passes[name] = {
                "count": len(values),
                "median_us": round(sorted(values)[len(values) // 2] / 1e3, 1),
                "us_per_retr": round(sum(values) / 1e3 / retrs, 1),
            }
            continue
        if len(values) < retrs // 2:
            continue  # set-up, the big message, the odd error path
        values.sort()
        cut = values[len(values) // 100 : len(values) - len(values) // 100] or values
        mean = sum(cut) / len(cut) / 1e3
        per_retr = mean * len(values) / retrs
        total += per_retr
        rows.append(
            {
                "phase": name,
                "kind": KINDS.get(name, "relay"),
                "count": len(values),
                "median_us": round(values[len(values) // 2] / 1e3, 1),
                "trimmed_mean_us": round(mean, 1),
                "us_per_retr": round(per_retr, 1),
            }
        )
    rows.sort(key=lambda r: -r["us_per_retr"])
    by_kind: dict[str, float] = {}
    for r in rows:
        r["share"] = round(r["us_per_retr"] / total, 3) if total else 0.0
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0.0) + r["us_per_retr"]
    return {
        "us_per_retr": round(total, 1),
        "by_kind_us_per_retr": {k: round(v, 1) for k, v in sorted(by_kind.items())},
        "phases": rows,
        "gc_passes": gc_passes,
        "gc_full_passes_after_freeze": sum(1 for n in frozen_at if n),
    }
