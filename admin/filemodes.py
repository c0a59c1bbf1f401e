"""File modes under state_dir: 0640 files and 0750 directories or stricter, whatever the
umask (issue 10 item 6).

Why here and not in every `open()`: the archive is written by libraries that create
their own files -- SQLite (catalog.sqlite and its -wal/-shm), tantivy (index/) -- with
the process umask. systemd's unit sets `UMask=0027`; run by hand with the common umask
022 they came out world-readable, so every local user could read the archived mail.
`restrict_umask()` at the console-script entry point covers every file any command
creates; `tighten()` at `run` repairs a state_dir created earlier under a looser umask.
A stricter umask (077) is kept as it is: bits are only ever removed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: Bits never set under state_dir: group write and everything for others.
STATE_UMASK = 0o027


def restrict_umask() -> int:
    """Add STATE_UMASK to the process umask; returns the previous umask."""
    old = os.umask(STATE_UMASK)
    os.umask(old | STATE_UMASK)
    return old


def tighten(state_dir: Path) -> list[Path]:
    """Remove group-write and other bits from state_dir and everything below it, except
    the report files (written 0640 by the spool itself, and possibly many). Returns the
    paths changed. Symbolic links are not followed; paths that vanish are skipped."""
    changed: list[Path] = []
    if not state_dir.is_dir():
        return changed
    reports = state_dir / "reports"
    for top, dirs, files in os.walk(state_dir):
        here = Path(top)
        for name in [None, *files]:
            path = here if name is None else here / name
            if _tighten_one(path):
                changed.append(path)
        if here == reports:
            dirs.clear()
            files.clear()
    return changed


def _tighten_one(path: Path) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & STATE_UMASK:
        return False
    try:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~STATE_UMASK)
    except OSError:
        return False
    return True
