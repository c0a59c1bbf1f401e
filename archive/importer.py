"""`proxy-admin import PATH`: bring existing mail into the archive.

PATH may be a report directory (`*.mpr` files: ingested like the spool), a Maildir
(`cur/` + `new/`), a directory tree of `*.eml` files, an mbox file, or one `.eml` file.
Each imported message gets a provenance row (protocol "import", the source file) keyed by
a UUID derived from the absolute source path (and mbox position), so importing the same
source twice adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import mailbox
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from archive.errors import ArchiveError

from .catalog import now_iso
from .reports import Item, Provenance

IMPORT_NS = uuid.UUID("6d2b7f8e-3c1a-4f0e-9a57-1f4e2b9c0d11")


class ImportSourceError(ArchiveError, ValueError):
    """PATH is not something `import` understands."""


@dataclass(frozen=True)
class Source:
    kind: str  # "reports", "maildir", "eml", "mbox"
    path: Path
    count: int


def detect(path: Path) -> Source:
    path = path.resolve()
    if path.is_dir():
        if (path / "cur").is_dir() and (path / "new").is_dir():
            n = sum(1 for sub in ("cur", "new") for p in (path / sub).iterdir() if p.is_file())
            return Source("maildir", path, n)
        mprs = sum(1 for _ in path.glob("*.mpr"))
        if mprs:
            return Source("reports", path, mprs)
        emls = sum(1 for _ in path.rglob("*.eml"))
        if emls:
            return Source("eml", path, emls)
        raise ImportSourceError(f"{path}: no .mpr, .eml or Maildir found")
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(5)
        if head == b"From ":
            return Source("mbox", path, -1)
        return Source("eml", path, 1)
    raise ImportSourceError(f"{path}: no such file or directory")


def _provenance(source: str, key: str, kind: str) -> Provenance:
    record = {"source": source, "key": key, "kind": kind}
    blob = json.dumps(record, sort_keys=True).encode()
    ident = str(uuid.uuid5(IMPORT_NS, f"{source}\0{key}"))
    row = {
        "uuid": ident,
        "protocol": "import",
        "direction": None,
        "source": f"{source}#{key}" if key else source,
        "received_at": now_iso(),
        "outcome": "imported",
        "rcpt_to": "[]",
        "mpr_sha256": hashlib.sha256(blob).hexdigest(),
    }
    return Provenance(uuid=ident, row=row, report_hash=hashlib.sha256(blob).hexdigest())


def items(src: Source) -> Iterator[Item]:
    if src.kind == "maildir":
        for sub in ("cur", "new"):
            for p in sorted((src.path / sub).iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    # the unique part of a Maildir name survives flag changes (":2,S")
                    key = f"{sub}/{p.name.split(':')[0]}"
                    yield Item(
                        _provenance(str(src.path), key.split("/", 1)[1], "maildir"), p.read_bytes()
                    )
    elif src.kind == "eml":
        paths = [src.path] if src.path.is_file() else sorted(src.path.rglob("*.eml"))
        for p in paths:
            if not p.name.startswith("."):
                yield Item(_provenance(str(p), "", "eml"), p.read_bytes())
    elif src.kind == "mbox":
        box = mailbox.mbox(src.path, create=False)
        try:
            for i, key in enumerate(box.iterkeys()):
                yield Item(_provenance(str(src.path), str(i), "mbox"), box.get_bytes(key))
        finally:
            box.close()
    else:
        raise ImportSourceError(f"cannot read {src.kind} items")
