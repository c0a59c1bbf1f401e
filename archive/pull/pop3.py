"""Pull one POP3 mailbox by UIDL: only messages whose UIDL was not archived yet.

poplib does the session (USER/PASS, STLS, UIDL, DELE, QUIT); RETR is read here line by
line straight into the spool writer, because poplib's `retr()` keeps the whole message
in memory and refuses lines over 2048 octets. The archived bytes are the RETR content
after dot-unstuffing, exactly as the proxy archives POP3 downloads. A server without
UIDL cannot be pulled incrementally and is refused with a clear error. POP3 has no
folders and no arrival date: the message's age for `delete_after_days` is its Date
header, or the time mailtee first archived it.
"""

from __future__ import annotations

import email.utils
import poplib
import time
from collections.abc import Callable

from admin.config import MailboxConfig

from .common import (
    BATCH_BYTES,
    BATCH_MESSAGES,
    HEAD_BYTES,
    SERVER_TIMEOUT,
    BoxResult,
    Credential,
    Progress,
    PullError,
    client_context,
    scrub,
)
from .multidrop import header_block
from .pipeline import Pipeline
from .state import PullState, Seen
from .writer import Pending, PullWriter

POP3_ERRORS = (poplib.error_proto, OSError, EOFError)
#: longest line read at once; longer lines are read in pieces (bounded memory)
LINE_CAP = 64 * 1024


def connect(box: MailboxConfig, cred: Credential) -> poplib.POP3:
    assert box.port is not None  # MailboxConfig fills the default port
    try:
        if box.tls == "implicit":
            ctx = client_context(box.verify, box.ca)
            c: poplib.POP3 = poplib.POP3_SSL(
                box.server, box.port, timeout=SERVER_TIMEOUT, context=ctx
            )
        else:
            c = poplib.POP3(box.server, box.port, timeout=SERVER_TIMEOUT)
    except POP3_ERRORS as e:
        raise PullError(f"{box.server}:{box.port}: {scrub(_text(e), cred.secret)}") from None
    try:
        if box.tls == "starttls":
            c.stls(client_context(box.verify, box.ca))
        if cred.token is not None:
            _auth_oauth(c, cred.mechanism, cred.initial_response(box.user, box.server, box.port))
        else:
            c.user(box.user)
            c.pass_(cred.password or "")
    except POP3_ERRORS as e:
        close(c)
        raise PullError(f"{box.server}:{box.port}: {scrub(_text(e), cred.secret)}") from None
    return c


def _auth_oauth(c: poplib.POP3, mechanism: str, response: bytes) -> None:
    """`AUTH XOAUTH2|OAUTHBEARER <initial response>` (RFC 5034 with the response on the
    command line). A refused token is answered with a `+` challenge carrying the server's JSON
    error, to which the client sends an empty line and gets the `-ERR` (RFC 7628 3.2.3);
    poplib would take that `+` for success, so the replies are read here."""
    c._putcmd(f"AUTH {mechanism.upper()} {response.decode()}")  # type: ignore[attr-defined]  # noqa: SLF001
    reply, _ = c._getline()  # type: ignore[attr-defined]  # noqa: SLF001
    if reply.startswith(b"+ ") or reply == b"+":
        c._putcmd("")  # type: ignore[attr-defined]  # noqa: SLF001
        reply, _ = c._getline()  # type: ignore[attr-defined]  # noqa: SLF001
    if not reply.startswith(b"+OK"):
        raise poplib.error_proto(reply)


def close(c: poplib.POP3) -> None:
    try:
        c.quit()
    except POP3_ERRORS:
        try:
            c.close()
        except POP3_ERRORS:
            pass


def _text(e: BaseException) -> str:
    arg = e.args[0] if e.args else e
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def uidl_map(c: poplib.POP3) -> dict[str, tuple[int, int]]:
    """UIDL -> (message number, size)."""
    try:
        _resp, lines, _ = c.uidl()
    except poplib.error_proto:
        raise PullError("the server does not support UIDL; it cannot be pulled") from None
    sizes: dict[int, int] = {}
    _resp, slines, _ = c.list()
    for line in slines:
        num, size = line.split()[:2]
        sizes[int(num)] = int(size)
    out: dict[str, tuple[int, int]] = {}
    for raw_line in lines:
        msg, uidl = raw_line.decode("ascii", "replace").split()[:2]
        out[uidl] = (int(msg), sizes.get(int(msg), 0))
    return out


def retr(c: poplib.POP3, n: int, write: Callable[[bytes], None]) -> None:
    """RETR `n`, dot-unstuffed, into `write`; CRLF line ends kept."""
    c._putcmd(f"RETR {n}")  # type: ignore[attr-defined]  # noqa: SLF001 - no streaming RETR
    c._getresp()  # type: ignore[attr-defined]  # noqa: SLF001 - raises error_proto on -ERR
    at_start = True
    while True:
        line = c.file.readline(LINE_CAP)
        if not line:
            raise PullError(f"message {n}: connection closed during RETR")
        if at_start:
            if line in (b".\r\n", b".\n"):
                return
            if line.startswith(b".."):
                line = line[1:]
        at_start = line.endswith(b"\n")
        write(line)


def msg_date(head: bytes) -> float | None:
    from email.parser import BytesHeaderParser

    value = BytesHeaderParser().parsebytes(header_block(head)).get("Date")
    try:
        t = email.utils.parsedate_to_datetime(str(value)) if value else None
    except (TypeError, ValueError):
        return None
    return t.timestamp() if t is not None and t.tzinfo is not None else None


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
    c = connect(box, cred)
    try:
        try:
            listing = uidl_map(c)
            done_refs = state.done_refs(box.name, "")
            todo = [(u, n, s) for u, (n, s) in sorted(listing.items(), key=lambda kv: kv[1])]
            todo = [t for t in todo if t[0] not in done_refs]
            if dry_run:
                result.new = len(todo)
                return
            if progress:
                progress(0, len(todo))
            sock = getattr(c, "sock", None)
            version = getattr(sock, "version", None)
            w = writer(version() if callable(version) else None)
            try:
                _pull_all(c, box, state, w, todo, result, progress)
            finally:
                w.close()
        finally:
            close(c)
    except POP3_ERRORS as e:
        raise PullError(scrub(f"{box.server}:{box.port}: {_text(e)}", cred.secret)) from None


def _pull_all(
    c: poplib.POP3,
    box: MailboxConfig,
    state: PullState,
    w: PullWriter,
    todo: list[tuple[str, int, int]],
    result: BoxResult,
    progress: Progress | None,
) -> None:
    pipe = Pipeline(box, state, w, result)
    try:
        _retr_all(c, w, todo, pipe, progress)
    finally:
        pipe.close()
    result.folders.pop("", None)


def _retr_all(
    c: poplib.POP3,
    w: PullWriter,
    todo: list[tuple[str, int, int]],
    pipe: Pipeline,
    progress: Progress | None,
) -> None:
    done, i = 0, 0
    while i < len(todo):
        pending: list[Pending] = []
        size = 0
        while i < len(todo) and len(pending) < BATCH_MESSAGES and size < BATCH_BYTES:
            uidl, n, s = todo[i]
            i += 1
            size += s
            mw = w.open("", {"uidl": uidl, "msg": n})
            head = bytearray()

            def write(chunk: bytes, mw=mw, head: bytearray = head) -> None:
                if len(head) < HEAD_BYTES:
                    head.extend(chunk[: HEAD_BYTES - len(head)])
                mw.write(chunk)

            retr(c, n, write)
            # no Date header: the message's age counts from its first archiving
            item = Pending(mw, uidl, "", msg_date(bytes(head)) or time.time())
            w.finish_message(item, bytes(head))
            pending.append(item)
        done += pipe.submit(pending)
        if progress:
            progress(done, len(todo))
    done += pipe.flush()
    if progress:
        progress(done, len(todo))


def delete(c: poplib.POP3, rows: list[Seen]) -> list[Seen]:
    """DELE the messages of `rows` (by UIDL); the caller's QUIT commits. The rows DELEd."""
    listing = uidl_map(c)
    out = []
    for s in rows:
        if s.ref in listing:
            c.dele(listing[s.ref][0])
            out.append(s)
    return out
