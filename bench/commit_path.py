"""The archive side of one proxied message, in-process: what a session's copy costs the loop.

Prints ONE JSON object. No sockets, no provider, no client: a Trio task plays a POP3
session's part of the durable path for `--messages` messages of `--size` bytes (the
bench/pop3_relay.py message, in 16 KB chunks): `Spool.open_message` with the sections a
session builds, `MessageWriter.write` per chunk, `GroupCommitter.commit` (a lone
session: the inline barrier), and the report writer writing each `.eml` + `.mpr`.
Times per message: open / write / commit as the loop sees them, and the process' CPU.

Two runs per round:
- `with_writer`: as in service; the report writer runs every 20 ms (its files are
  written by the pair writer process, archive.pair_writer; its CPU is counted in
  `process_cpu_us`).
- `writer_idle`: the report writer held off until the end (its work is timed apart:
  `writer_cpu_us_afterwards`, which includes its waits of up to 0.5 s per pass).
The difference is what the report writer costs the loop beside its own CPU. Before the
sixth pass both ran Python in one process, so every time the loop released the GIL (a
hash update, a write, a flush) the writer could take it; on a disk, its files' writeback
also competes with the barriers.

The state dir is on `--dir` (default /dev/shm: the figures are CPU, not the disk's; on
a disk the barrier adds its flush). These are absolute microseconds on one machine:
compare runs of one invocation only.

    .venv/bin/python bench/commit_path.py
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, cpu_seconds, emit, machine_info, work_dir  # noqa: E402

sys.path.insert(0, str(REPO))

import trio  # noqa: E402
from pop3_relay import make_message  # noqa: E402

import archive.commit as commit_mod  # noqa: E402
from archive.commit import GroupCommitter, spool_area  # noqa: E402
from archive.report_sections import (  # noqa: E402
    ClientSection,
    MessageStart,
    Pop3Section,
    SessionReport,
    TargetSection,
)
from archive.spool import Spool  # noqa: E402

CHUNK = 16 * 1024


def _cpu(committer: GroupCommitter) -> float:
    """This process's CPU and that of its pair writer process (archive.pair_writer)."""
    pid = committer.pairs.pid
    return time.process_time() + (cpu_seconds(pid) if pid is not None else 0.0)


def _report(n: int) -> SessionReport:
    return SessionReport(
        listener="bench",
        client=ClientSection("127.0.0.1", 40000, None),
        target=TargetSection("127.0.0.1", 110, None),
        start=MessageStart("incoming", pop3=Pop3Section("bench", f"uid{n}", n)),
    )


async def _run(base: Path, messages: int, size: int, writer_idle: bool) -> dict[str, Any]:
    reports = base / "reports"
    reports.mkdir(parents=True)
    message = make_message(1, size)
    chunks = [message[i : i + CHUNK] for i in range(0, len(message), CHUNK)]
    spool = Spool(reports)
    saved = commit_mod.MAX_UNWRITTEN
    try:
        async with trio.open_nursery() as nursery:
            committer = await nursery.start(GroupCommitter(reports, spool_area(base, 0)).run)
            committer.lone_session = lambda: True

            async def one(n: int) -> tuple[float, float, float]:
                a = time.perf_counter()
                w = spool.open_message("pop3", _report(n))
                b = time.perf_counter()
                for c in chunks:
                    w.write(c)
                d = time.perf_counter()
                await committer.commit(w, "delivered", "+OK")
                return b - a, d - b, time.perf_counter() - d

            for n in range(min(200, messages)):  # warm-up (and a measured barrier)
                await one(n)
            await trio.sleep(0.3)
            if writer_idle:  # the report writer's backoff gate, held shut for now
                commit_mod.MAX_UNWRITTEN = 1 << 40
                committer._write_after = float("inf")
            parts = [0.0, 0.0, 0.0]
            cpu0 = _cpu(committer)
            for n in range(messages):
                for i, t in enumerate(await one(n)):
                    parts[i] += t
            loop_cpu = _cpu(committer) - cpu0
            writer_s = 0.0
            if writer_idle:  # now let it write everything, timed apart
                t0 = _cpu(committer)
                committer._write_after = 0.0
                committer._work.set()
                # the committer has no "all written" event; the bench polls its counter
                while committer._unwritten:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                writer_s = _cpu(committer) - t0
            nursery.cancel_scope.cancel()
    finally:
        commit_mod.MAX_UNWRITTEN = saved
    us = 1e6 / messages
    out = {
        "open_us": round(parts[0] * us, 1),
        "write_us": round(parts[1] * us, 1),
        "commit_us": round(parts[2] * us, 1),
        "loop_us": round(sum(parts) * us, 1),
        "process_cpu_us": round(loop_cpu * us, 1),
        "inline_batches": committer.inline_batches,
    }
    if writer_idle:
        out["writer_cpu_us_afterwards"] = round(writer_s * us, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--size", type=int, default=50 * 1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", type=Path, default=Path("/dev/shm"))
    args = p.parse_args(argv)
    rounds = []
    for _ in range(args.rounds):
        one: dict[str, Any] = {}
        for mode in ("with_writer", "writer_idle"):
            base = work_dir(args.dir, "mailtee-commit-path-")
            try:
                one[mode] = trio.run(_run, base, args.messages, args.size, mode == "writer_idle")
            finally:
                shutil.rmtree(base, ignore_errors=True)
        rounds.append(one)
    medians = {
        mode: {
            k: statistics.median(r[mode][k] for r in rounds)
            for k in rounds[0][mode]
            if k != "inline_batches"
        }
        for mode in ("with_writer", "writer_idle")
    }
    emit(
        {
            "benchmark": "commit_path",
            "params": {"messages": args.messages, "size": args.size, "dir": str(args.dir)},
            "machine": machine_info(),
            "median": medians,
            "loop_cost_of_the_writer_thread_us": round(
                medians["with_writer"]["loop_us"] - medians["writer_idle"]["loop_us"], 1
            ),
            "rounds": rounds,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
