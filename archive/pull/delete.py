"""`delete_after_days`: delete at the source only what the archive provably holds.

A message is deleted from the mailbox only when all of these hold:
- it is older than N days (IMAP INTERNALDATE; POP3 Date header or first archiving);
- its report was durable (state row `done`) and it was ingested into the archive store;
- its blob, read back from the archive now, hashes to the SHA-256 recorded when it was
  pulled (`verify`);
- the archive was writable in this run (ingest succeeded and a probe file could be
  created and flushed in the store): a broken or read-only archive deletes nothing.
IMAP deletes with `UID STORE +FLAGS (\\Deleted)` and `UID EXPUNGE` (UIDPLUS), so no
other message flagged \\Deleted by a person is expunged; without UIDPLUS the messages are
only flagged. A folder whose UIDVALIDITY changed since the pull is left alone.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import defaultdict
from pathlib import Path

from imapclient import IMAPClient

from admin.config import MailboxConfig
from archive.durable import fsync_dir
from archive.store import Archive, ArchiveError

from .state import PullState, Seen

DAY = 86400


def archive_writable(state_dir: Path) -> str | None:
    """None if a file can be created, flushed and removed in the store; else why not."""
    root = state_dir / "archive"
    probe = root / f".delete-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
        fsync_dir(root)
    except OSError as e:
        return f"the archive is not writable ({e.strerror or type(e).__name__})"
    return None


def verified_candidates(
    box: MailboxConfig, state: PullState, archive: Archive, now: float | None = None
) -> list[Seen]:
    """Messages of `box` that may be deleted now (see the module docstring)."""
    assert box.delete_after_days is not None
    cutoff = (now or time.time()) - box.delete_after_days * DAY
    out = []
    for s in state.deletable(box.name, cutoff):
        if not s.sha256:
            continue
        try:
            raw = archive.get_raw(s.sha256)
        except ArchiveError:
            continue  # not ingested yet (or unreadable): keep it at the source
        if hashlib.sha256(raw).hexdigest() == s.sha256:
            out.append(s)
    return out


def delete_imap(c: IMAPClient, rows: list[Seen]) -> tuple[list[Seen], str | None]:
    """Delete `rows` from their folders; (the rows deleted, a note)."""
    names = {}
    for _flags, delim, name in c.list_folders():
        sep = delim.decode() if isinstance(delim, bytes) else delim
        names[name.replace(sep, "/") if sep and sep != "/" else name] = name
    by_folder: dict[str, list[Seen]] = defaultdict(list)
    for s in rows:
        by_folder[s.folder].append(s)
    uidplus = c.has_capability("UIDPLUS")
    deleted: list[Seen] = []
    note = None
    for path, items in by_folder.items():
        if path not in names:
            continue
        info = c.select_folder(names[path], readonly=False)
        uv = int(info[b"UIDVALIDITY"])
        mine = [s for s in items if s.ref.split(":")[0] == str(uv)]
        uids = [int(s.ref.split(":")[1]) for s in mine]
        if not uids:
            continue
        c.add_flags(uids, [b"\\Deleted"], silent=True)
        if uidplus:
            c.uid_expunge(uids)
        else:
            note = "server lacks UIDPLUS: messages flagged \\Deleted, not expunged"
        deleted += mine
        c.unselect_folder() if c.has_capability("UNSELECT") else c.close_folder()
    return deleted, note
