"""Pull one IMAP mailbox: every selectable folder, only what is not archived yet.

Theory of operation. A first pass asks each folder's `STATUS (UIDVALIDITY UIDNEXT)`;
a folder whose UIDVALIDITY is unchanged and whose UIDNEXT is not above the stored
high-water mark has nothing new and costs one round trip (an incremental pull of an
unchanged mailbox is one STATUS per folder). The other folders are `EXAMINE`d (read
only: flags cannot change) and `UID SEARCH`ed for UIDs above the mark. The second pass
fetches those with `BODY.PEEK[]` (never sets \\Seen) in bounded batches, very large
messages in byte ranges, writes each through the spool (archive/pull/writer.py) and
records it in the state (archive/pull/state.py) only once the batch is durable. When a
folder's UIDVALIDITY changed, all of it is fetched again and a message whose SHA-256
this folder already archived is only noted, not archived twice. Folder names are
decoded from modified UTF-7 by imapclient; paths are stored with "/" as separator.
"""

from __future__ import annotations

import hashlib
import imaplib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from admin.config import MailboxConfig

from .common import (
    BATCH_BYTES,
    BATCH_MESSAGES,
    HEAD_BYTES,
    PARTIAL_CHUNK,
    PARTIAL_OVER,
    SERVER_TIMEOUT,
    BoxResult,
    Credential,
    Progress,
    PullError,
    client_context,
    iso,
    scrub,
)
from .pipeline import Pipeline
from .state import PullState, Seen, imap_ref
from .writer import Pending, PullWriter

IMAP_ERRORS = (imaplib.IMAP4.error, IMAPClientError, OSError)
SKIP_FLAGS = {b"\\noselect", b"\\nonexistent"}
#: UIDs per FETCH of sizes/dates (keeps command lines short)
META_CHUNK = 500


@dataclass
class FolderPlan:
    name: str  # the server's name (decoded)
    path: str  # "/"-separated, as stored and searched
    uidvalidity: int
    hwm: int
    uidnext: int
    rescan: bool
    uids: list[int] = field(default_factory=list)


def connect(box: MailboxConfig, cred: Credential) -> IMAPClient:
    ctx = client_context(box.verify, box.ca) if box.tls != "none" else None
    try:
        c = IMAPClient(
            box.server,
            port=box.port,
            ssl=box.tls == "implicit",
            ssl_context=ctx,
            timeout=SERVER_TIMEOUT,
        )
    except IMAP_ERRORS as e:
        raise PullError(f"{box.server}:{box.port}: {scrub(str(e), cred.secret)}") from None
    try:
        if box.tls == "starttls":
            c.starttls(ctx)
        c.normalise_times = False
        if cred.token is not None:
            cred.check(box.user)
            if cred.mechanism == "oauthbearer":
                c.oauthbearer_login(box.user, cred.token)  # RFC 7628 (imapclient's)
            else:
                c.oauth2_login(box.user, cred.token)  # SASL XOAUTH2 (imapclient's)
        else:
            c.login(box.user, cred.password or "")
    except IMAP_ERRORS as e:
        close(c)
        raise PullError(f"{box.server}:{box.port}: {scrub(str(e), cred.secret)}") from None
    return c


def close(c: IMAPClient) -> None:
    """LOGOUT, or at least close the socket when the connection is already broken."""
    try:
        c.logout()
    except IMAP_ERRORS:
        try:
            c.shutdown()
        except IMAP_ERRORS:
            pass


def tls_version(c: IMAPClient) -> str | None:
    sock = getattr(getattr(c, "_imap", None), "sock", None)
    version = getattr(sock, "version", None)
    return version() if callable(version) else None


def _selected(box: MailboxConfig, path: str) -> bool:
    def under(p: str, roots: list[str]) -> bool:
        for r in roots:
            r = r.strip("/")
            if r.upper() == "INBOX" and p.upper().split("/")[0] == "INBOX":
                return p.upper() == "INBOX" or p.upper().startswith("INBOX/")
            if p == r or p.startswith(r + "/"):
                return True
        return False

    if box.folders and not under(path, box.folders):
        return False
    return not under(path, box.exclude_folders)


def plan(c: IMAPClient, box: MailboxConfig, state: PullState) -> list[FolderPlan]:
    """First pass: which folders have new mail, and which UIDs."""
    plans = []
    for flags, delim, name in c.list_folders():
        if {f.lower() for f in flags} & SKIP_FLAGS:
            continue
        sep = delim.decode() if isinstance(delim, bytes) else delim
        path = name.replace(sep, "/") if sep and sep != "/" else name
        if not _selected(box, path):
            continue
        st = c.folder_status(name, [b"UIDVALIDITY", b"UIDNEXT"])
        uidvalidity, uidnext = int(st[b"UIDVALIDITY"]), int(st[b"UIDNEXT"])
        stored_uv, hwm = state.folder(box.name, path)
        rescan = stored_uv is not None and stored_uv != uidvalidity
        if rescan:
            hwm = 0
        p = FolderPlan(name, path, uidvalidity, hwm, uidnext, rescan)
        if not rescan and stored_uv is not None and uidnext - 1 <= hwm:
            continue  # nothing new: one round trip
        c.select_folder(name, readonly=True)
        found = c.search(["UID", f"{hwm + 1}:*"]) if uidnext - 1 > hwm else []
        done = state.done_refs(box.name, path, prefix=f"{uidvalidity}:")
        p.uids = sorted(u for u in found if u > hwm and imap_ref(uidvalidity, u) not in done)
        plans.append(p)
    return plans


def _batches(c: IMAPClient, uids: list[int]) -> list[list[tuple[int, int, float | None]]]:
    """(uid, size, internaldate epoch) in batches bounded by count and bytes."""
    meta: dict[int, tuple[int, float | None]] = {}
    for i in range(0, len(uids), META_CHUNK):
        chunk = uids[i : i + META_CHUNK]
        for uid, d in c.fetch(chunk, ["RFC822.SIZE", "INTERNALDATE"]).items():
            when = d.get(b"INTERNALDATE")
            meta[uid] = (int(d.get(b"RFC822.SIZE", 0)), when.timestamp() if when else None)
    out: list[list[tuple[int, int, float | None]]] = []
    cur: list[tuple[int, int, float | None]] = []
    size = 0
    for uid in uids:
        if uid not in meta:
            continue  # expunged since the search
        s, when = meta[uid]
        if cur and (len(cur) >= BATCH_MESSAGES or size + s > BATCH_BYTES):
            out.append(cur)
            cur, size = [], 0
        cur.append((uid, s, when))
        size += min(s, PARTIAL_OVER)
    if cur:
        out.append(cur)
    return out


def _fetch_large(c: IMAPClient, uid: int, size: int, write: Callable[[bytes], None]) -> None:
    offset = 0
    while True:
        part = f"BODY.PEEK[]<{offset}.{PARTIAL_CHUNK}>"
        data = c.fetch([uid], [part]).get(uid, {})
        chunk = data.get(f"BODY[]<{offset}>".encode())
        if chunk is None:
            raise PullError(f"UID {uid}: the server returned no data for a partial fetch")
        write(chunk)
        offset += len(chunk)
        if len(chunk) < PARTIAL_CHUNK or offset >= size and not chunk:
            return


def pull(
    box: MailboxConfig,
    cred: Credential,
    state: PullState,
    writer: Callable[[str | None], PullWriter],
    result: BoxResult,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> None:
    """Archive what is new in `box`; counts go into `result`. Raises PullError."""
    c = connect(box, cred)
    try:
        try:
            plans = plan(c, box, state)
            total = sum(len(p.uids) for p in plans)
            if dry_run:
                for p in plans:
                    if p.uids:
                        result.folders[p.path] = len(p.uids)
                result.new = total
                return
            if progress:
                progress(0, total)
            w = writer(tls_version(c))
            run = _Run(c, box, state, w, result, total, progress)
            try:
                done = 0
                for p in plans:
                    done = _pull_folder(run, p, done)
            finally:
                w.close()
        finally:
            close(c)
    except IMAP_ERRORS as e:
        raise PullError(scrub(f"{box.server}:{box.port}: {e}", cred.secret)) from None


@dataclass(frozen=True, slots=True)
class _Run:
    """What one pull of a mailbox hands from folder to folder."""

    c: IMAPClient
    box: MailboxConfig
    state: PullState
    w: PullWriter
    result: BoxResult
    total: int
    progress: Progress | None


def _pull_folder(run: _Run, p: FolderPlan, done: int) -> int:
    c, box, state, progress = run.c, run.box, run.state, run.progress
    if p.uids:
        info = c.select_folder(p.name, readonly=True)
        if int(info[b"UIDVALIDITY"]) != p.uidvalidity:
            raise PullError(f"{p.path}: UIDVALIDITY changed during the pull; run pull again")
        known = state.known_shas(box.name, p.path) if p.rescan else set()
        pipe = Pipeline(box, state, run.w, run.result)
        try:
            done = _fetch_folder(run, p, done, pipe, known)
            done += pipe.flush()
            if progress:
                progress(done, run.total)
        finally:
            pipe.close()
    # every UID below the UIDNEXT seen in the first pass is now archived
    state.set_folder(box.name, p.path, p.uidvalidity, max([p.hwm, p.uidnext - 1, *p.uids]))
    return done


def _fetch_folder(run: _Run, p: FolderPlan, done: int, pipe: Pipeline, known: set[str]) -> int:
    """Fetch the folder's new UIDs batch by batch into the pipeline; returns `done`."""
    c, box, state, w, result = run.c, run.box, run.state, run.w, run.result
    total, progress = run.total, run.progress
    for batch in _batches(c, p.uids):
        small = [uid for uid, size, _ in batch if size <= PARTIAL_OVER]
        bodies = c.fetch(small, ["BODY.PEEK[]"]) if small else {}
        pending: list[Pending] = []
        seen_again: list[Seen] = []
        for uid, size, when in batch:
            ref = imap_ref(p.uidvalidity, uid)
            prov: dict[str, Any] = {
                "uidvalidity": p.uidvalidity,
                "uid": uid,
                "internal_date": iso(when),
            }
            if size <= PARTIAL_OVER:
                raw = bodies.get(uid, {}).get(b"BODY[]")
                if raw is None:
                    continue  # expunged between the size fetch and this one
                if p.rescan:
                    sha = hashlib.sha256(raw).hexdigest()
                    if sha in known:
                        seen_again.append(Seen(box.name, p.path, ref, sha, when, ""))
                        continue
                mw = w.open(p.path, prov)
                mw.write(raw)
                head = raw[:HEAD_BYTES]
            else:
                mw = w.open(p.path, prov)
                head_buf = bytearray()

                def write(chunk: bytes, mw: Any = mw, head_buf: bytearray = head_buf) -> None:
                    if len(head_buf) < HEAD_BYTES:
                        head_buf.extend(chunk[: HEAD_BYTES - len(head_buf)])
                    mw.write(chunk)

                _fetch_large(c, uid, size, write)
                head = bytes(head_buf)
                if p.rescan and mw.sha256 in known:
                    mw.abort()
                    seen_again.append(Seen(box.name, p.path, ref, mw.sha256, when, ""))
                    continue
            item = Pending(mw, ref, p.path, when)
            w.finish_message(item, head)
            pending.append(item)
        if seen_again:
            state.record_known(seen_again)
            result.known += len(seen_again)
        done += pipe.submit(pending)
        done += len(seen_again)
        if progress:
            progress(done, total)
    return done
