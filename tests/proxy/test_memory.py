"""proxy/memory.py: the glibc knobs take effect, and the service runs the trim loop."""

from __future__ import annotations

import platform

import pytest
import trio

from proxy import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_mmap_threshold_is_pinned_and_trim_runs() -> None:
    assert memory.configure() is True
    memory.trim()  # returns free pages; must not fail


async def test_trim_loop_trims_every_interval(monkeypatch, autojump_clock) -> None:
    calls = []

    async def inline(fn, *args):  # no worker thread: the autojump clock stays exact
        return fn(*args)

    monkeypatch.setattr(memory, "trim", lambda: calls.append(1))
    monkeypatch.setattr(trio.to_thread, "run_sync", inline)
    if memory._LIBC is None:
        pytest.skip("not glibc: the loop returns at once")
    with trio.move_on_after(memory.TRIM_INTERVAL * 3 + 1):
        await memory.trim_loop()
    assert len(calls) == 3
