"""`proxy-admin export`: write matching messages out as `.eml` files or one mbox.

`.eml` files are the exact archived bytes, named `<id>-<sha256 prefix>.eml`. The mbox is
mboxrd-style (`From ` lines in bodies are quoted by the stdlib `mailbox` module) and is
written to `<out>/mailtee-export.mbox`.
"""

from __future__ import annotations

import mailbox
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .store import Archive, Hit


def export(
    archive: Archive,
    hits: Iterable[Hit],
    out: Path,
    fmt: str = "eml",
    progress: Callable[[int], None] | None = None,
) -> tuple[int, Path]:
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    if fmt == "eml":
        for hit in hits:
            target = out / f"{hit.id}-{hit.sha256[:12]}.eml"
            tmp = out / f".{target.name}.tmp"
            tmp.write_bytes(archive.get_raw(hit.id))
            os.replace(tmp, target)
            n += 1
            if progress:
                progress(n)
        return n, out
    path = out / "mailtee-export.mbox"
    box = mailbox.mbox(path, create=True)
    box.lock()
    try:
        for hit in hits:
            box.add(archive.get_raw(hit.id))
            n += 1
            if progress:
                progress(n)
        box.flush()
    finally:
        box.unlock()
        box.close()
    return n, path
