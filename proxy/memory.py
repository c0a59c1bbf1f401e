"""Give freed memory back to the system: RSS follows the live sessions (issue 10 item 10).

Theory of operation. Measured with bench/session_memory.py (thousands of fuzzed SMTP
sessions through the real listeners), the Python heap of the service stays flat --
tracemalloc's traced total does not grow -- while the process RSS kept climbing: glibc
keeps freed blocks of the C heap (receive buffers, TLS records, bytes objects of message
chunks) for reuse, and the dynamic mmap threshold moves large buffers from mmap (given
back at free) onto that heap after the first one is freed. Under concurrent fuzzed load
the high-water mark of fragmented, free heap is what RSS shows, and it never came down.

Two bounds, both no-ops where the C library is not glibc:
- `configure()` pins M_MMAP_THRESHOLD to 128 KiB: buffers that large are always mmap'ed
  and go back to the system the moment they are freed;
- `trim_loop()` calls `malloc_trim(0)` every TRIM_INTERVAL seconds (in a worker thread):
  free pages inside the heap are returned, so RSS falls back after a burst.

And one for time, not memory: `settle_collector()` freezes what start-up left alive, so
that the cyclic collector's rare full passes no longer walk it (each took 22-39 ms of a
worker's Trio thread, every session of the worker standing still meanwhile).
"""

from __future__ import annotations

import ctypes
import gc
import logging

import trio

from archive.libc import function, libc

log = logging.getLogger("mailtee.memory")

#: glibc's mallopt() parameter number for the mmap threshold (malloc.h: M_MMAP_THRESHOLD)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024
#: seconds between malloc_trim() calls; one call takes well under a millisecond when
#: there is nothing to give back
TRIM_INTERVAL = 30.0


def _glibc() -> ctypes.CDLL | None:
    if not (function("malloc_trim") and function("mallopt")):
        return None  # not glibc (musl has neither)
    return libc()


_LIBC = _glibc()


def configure() -> bool:
    """Pin the mmap threshold; True when it took effect."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def trim() -> None:
    """Return free heap pages to the system now."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def settle_collector() -> None:
    """Move everything alive now out of the cyclic garbage collector's reach (`gc.freeze`).

    Why: a worker that has started holds ~40,000 long-lived objects (modules, classes,
    the configuration, Trio's machinery) that no message ever frees, and each full
    collection walked all of them: measured in a relay worker, 23 ms with every session
    of the worker stopped, and an older-generation pass 1.1 ms (bench/phases.py). Frozen,
    a pass walks only what the sessions allocated since. Call it once, when start-up is
    done: only the first call in a process freezes (a reload's new objects, and a test
    process's later services, stay collectable as usual); what is garbage now is
    collected first, so nothing is frozen that could be freed.
    """
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()


_settled = False


async def trim_loop(interval: float = TRIM_INTERVAL) -> None:
    """Background task of the service: trim now and then; never raises."""
    if _LIBC is None:
        return
    while True:
        await trio.sleep(interval)
        await trio.to_thread.run_sync(trim)
