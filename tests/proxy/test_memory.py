"""proxy/memory.py: the glibc knobs take effect, and the service runs the trim loop."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from proxy import memory

REPO = Path(__file__).resolve().parents[2]


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


def test_settle_collector_freezes_once_after_collecting_garbage() -> None:
    """In a fresh interpreter (freezing this test process would outlive the test): the
    garbage of start-up is collected first, what is alive is frozen, and a second call
    (a reload, a later service in the same process) freezes nothing more."""
    code = textwrap.dedent(
        """
        import gc, weakref
        from proxy import memory

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle only the collector frees
        gone = weakref.ref(a)
        del a, b
        kept = [Node() for _ in range(100)]
        gc.disable()  # no pass of its own before the call
        memory.settle_collector()
        first = gc.get_freeze_count()
        more = [[] for _ in range(1000)]
        memory.settle_collector()
        print(gone() is None, first > 0, gc.get_freeze_count() == first)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.split() == ["True", "True", "True"]


async def test_the_service_settles_the_collector_once_started(make_proxy, monkeypatch) -> None:
    """serve_listeners (the worker processes, `proxy-admin run`) calls it once its
    listeners and commit path are up, before it reports itself started."""
    calls = []
    monkeypatch.setattr(memory, "settle_collector", lambda: calls.append(1))
    proxy = await make_proxy([{"name": "smtp", "target_port": 9}])
    assert calls == [1]
    assert proxy.service.ports  # listening
