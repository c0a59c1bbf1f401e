"""Online backup and restore of the archive store.

Theory of operation. `backup` runs while the service ingests. It first copies the catalog
with SQLite's online backup API (one consistent snapshot, taken in a single step so a
concurrent writer cannot make it restart), then copies from each pack exactly the bytes
that snapshot's rows can point at (packs are append-only, so those bytes are stable;
anything later belongs to rows the snapshot does not have), and last writes
`manifest.json` with the size and SHA-256 of every file. A backup without a manifest is
incomplete. A shared `maintenance.lock` keeps `compact` (which deletes packs) away meanwhile.
The index is not copied: `restore` rebuilds it from packs + catalog.

Every path inside a backup and a state dir is relative, so both can be moved anywhere.

`restore` checks every file against the manifest while copying it into
`state_dir/.archive.restoring`, renames that to `state_dir/archive` (refusing a state dir
that already has an archive), rebuilds the index and verifies the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .catalog import now_iso
from .durable import fsync_dir, write_atomic
from .maintenance import VerifyReport, apply_seal_modes, audit, maintenance_lock, verify
from .packs import FILE_MAGIC, pack_name
from .store import Archive, ArchiveError, Progress

MANIFEST = "manifest.json"
FORMAT = "mailtee-archive-backup"
VERSION = 1
COPY_CHUNK = 1 << 20


class BackupError(ArchiveError):
    """A backup cannot be made or restored (one line for the operator)."""


@dataclass
class BackupResult:
    path: str
    messages: int
    files: int
    bytes: int
    chain_head: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)  # every field, in order (plain values only)


@dataclass
class RestoreResult:
    path: str
    messages: int
    files: int
    bytes: int
    indexed: int
    verify: VerifyReport | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "messages": self.messages,
            "files": self.files,
            "bytes": self.bytes,
            "indexed": self.indexed,
            "verify": self.verify.as_dict() if self.verify else None,
        }


def _empty_dir(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


@dataclass
class _Tally:
    """Bytes copied so far, reported as `progress(copied, total)` after each chunk."""

    total: int
    progress: Progress | None
    copied: int = 0

    def __call__(self, n: int) -> None:
        self.copied += n
        if self.progress is not None:
            self.progress(self.copied, self.total)


def _copy(src: Path, dst: Path, limit: int | None, tick: Any = None) -> tuple[int, str]:
    """Copy (the first `limit` bytes of) `src` to `dst`, fsync'd; (size, sha256)."""
    h = hashlib.sha256()
    done = 0
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while limit is None or done < limit:
            want = COPY_CHUNK if limit is None else min(COPY_CHUNK, limit - done)
            data = fi.read(want)
            if not data:
                break
            fo.write(data)
            h.update(data)
            done += len(data)
            if tick is not None:
                tick(len(data))
        fo.flush()
        os.fsync(fo.fileno())
    if limit is not None and done != limit:
        raise BackupError(f"{src}: shorter than its committed records ({done} < {limit} bytes)")
    return done, h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(COPY_CHUNK):
            h.update(data)
    return h.hexdigest()


def backup(archive: Archive, dest: Path, progress: Progress | None = None) -> BackupResult:
    """Copy the catalog (snapshot), then the packs, then write the manifest."""
    dest = Path(dest)
    if not _empty_dir(dest):
        raise BackupError(f"{dest}: exists and is not empty (back up into a new directory)")
    with maintenance_lock(archive, shared=True):
        (dest / "archive" / "packs").mkdir(parents=True, exist_ok=True)
        cat_dst = dest / "archive" / "catalog.sqlite"
        src = sqlite3.connect(f"file:{archive.catalog.path}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(cat_dst)
        try:
            src.backup(dst)  # pages=-1: the whole database in one step, one snapshot
            dst.execute("PRAGMA journal_mode=DELETE")
            messages = dst.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
            head = dst.execute("SELECT chain FROM messages ORDER BY id DESC LIMIT 1").fetchone()
            ends = dict(
                dst.execute(
                    "SELECT pack, MAX(offset + length) FROM messages GROUP BY pack"
                ).fetchall()
            )
        finally:
            dst.close()
            src.close()
        files = [{"path": "archive/catalog.sqlite", **_describe(cat_dst)}]
        numbers = sorted(set(archive.packs.numbers()) | set(ends))
        total = sum(ends.get(n, len(FILE_MAGIC)) for n in numbers)
        tick = _Tally(total, progress)

        for n in numbers:
            rel = f"archive/packs/{pack_name(n)}"
            try:
                size, digest = _copy(
                    archive.packs.dir / pack_name(n),
                    dest / rel,
                    ends.get(n, len(FILE_MAGIC)),
                    tick,
                )
            except FileNotFoundError:
                raise BackupError(
                    f"{pack_name(n)} is missing from the archive (see `proxy-admin verify`)"
                ) from None
            files.append({"path": rel, "size": size, "sha256": digest})
        fsync_dir(dest / "archive" / "packs")
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": now_iso(),
            "messages": messages,
            "chain_head": head[0] if head else "",
            "files": files,
        }
        write_atomic(dest / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode(), 0o640)
        fsync_dir(dest)
    result = BackupResult(
        str(dest),
        messages,
        len(files),
        sum(int(f["size"]) for f in files),
        manifest["chain_head"],
    )
    audit(archive, "backup", result.as_dict())
    return result


def _describe(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


def read_manifest(src: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((Path(src) / MANIFEST).read_text("utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{src}: no {MANIFEST} (not a mailtee backup, or incomplete)") from None
    except (OSError, ValueError) as e:
        raise BackupError(f"{src}/{MANIFEST}: unreadable: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{src}: not a mailtee archive backup")
    if manifest.get("version") != VERSION:
        raise BackupError(f"{src}: backup format version {manifest.get('version')} unsupported")
    for f in manifest.get("files", []):
        rel = Path(str(f.get("path", "")))
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0] != "archive":
            raise BackupError(f"{src}/{MANIFEST}: bad path {str(rel)!r}")
    return manifest


def restore(src: Path, state_dir: Path, progress: Progress | None = None) -> RestoreResult:
    """Restore a backup into a state dir without an archive; rebuild the index; verify."""
    src, state_dir = Path(src), Path(state_dir)
    manifest = read_manifest(src)
    target = state_dir / "archive"
    if not _empty_dir(target):
        raise BackupError(
            f"{target}: an archive is already there (restore into an empty state dir)"
        )
    staging = state_dir / ".archive.restoring"
    shutil.rmtree(staging, ignore_errors=True)
    files = manifest["files"]
    total = sum(int(f["size"]) for f in files)
    tick = _Tally(total, progress)

    try:
        for f in files:
            rel = Path(f["path"]).relative_to("archive")
            out = staging / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                size, digest = _copy(src / f["path"], out, None, tick)
            except FileNotFoundError:
                raise BackupError(f"{src / f['path']}: missing from the backup") from None
            if (size, digest) != (int(f["size"]), f["sha256"]):
                raise BackupError(
                    f"{src / f['path']}: does not match the backup manifest (damaged backup)"
                )
        for d in {staging / Path(f["path"]).relative_to("archive").parent for f in files}:
            fsync_dir(d)
        if target.exists():
            target.rmdir()
        os.rename(staging, target)
        fsync_dir(state_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    with Archive(state_dir, reset_index=True) as archive:
        apply_seal_modes(archive)
        indexed = archive.rebuild_index()
        report = verify(archive)
        audit(archive, "restore", {"source": str(src), "messages": manifest["messages"]})
        messages = archive.count()
    return RestoreResult(str(target), messages, len(files), total, indexed, report)
