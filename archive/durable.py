"""Small file-system primitives for durable writes, shared by the spool, packs and CLI.

A file is durable once its data is fsync'd *and* the directory entry that names it is
fsync'd; `write_atomic` gives readers either the old or the new content, never a mix.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path | str, data: bytes, *, mode: int = 0o640, sync: bool = True) -> None:
    """Create or truncate `path` with exactly `mode` and write `data` (fsync'd if `sync`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int, *, sync: bool = True) -> None:
    """Replace `path` atomically via a hidden temp file beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write_file(tmp, data, mode=mode, sync=sync)
    try:
        # Keep the owner of the file being replaced: root editing the config of a
        # service running as "mailtee" must not leave it unreadable for the service.
        st = path.stat()
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
            os.chown(tmp, st.st_uid, st.st_gid)
    except FileNotFoundError:
        pass
    os.replace(tmp, path)
