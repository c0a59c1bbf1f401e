"""The C library, loaded once, for the few calls the standard library does not wrap.

Used for `sync_file_range`/`syncfs` (archive.journal), `mallopt`/`malloc_trim`
(proxy.memory) and `prctl(PR_SET_PDEATHSIG)` (the worker and web child processes). One
loader, with `use_errno` so a failed call's errno can be read; callers check that the
function they need exists (musl, for one, has no `malloc_trim`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_PR_SET_PDEATHSIG = 1


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The C library, or None where it cannot be loaded."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def function(name: str) -> bool:
    """Whether the C library has `name`."""
    lib = libc()
    return lib is not None and hasattr(lib, name)


def die_with_parent(sig: int) -> None:
    """Have the kernel send `sig` to this process when its parent exits (Linux
    PR_SET_PDEATHSIG; nothing elsewhere): a child must not outlive a supervisor killed
    with SIGKILL, as it would not under systemd's control group either."""
    if function("prctl"):
        libc().prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)  # type: ignore[union-attr]
