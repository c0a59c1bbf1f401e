"""`proxy-admin pull` and the service's scheduled pulls: every mailbox, one at a time.

Theory of operation. First the state settles what a crashed earlier run left in flight
(archive/pull/state.py). Then each mailbox is pulled into the report directory; a
failing mailbox (wrong password, server down, connection lost) is recorded in its
result and the next one is pulled. Then the new reports are ingested into the archive
store (unless the running service holds the archive: it ingests them itself), and only
then, for mailboxes with `delete_after_days`, verified messages are deleted at the
source (archive/pull/delete.py). Blocking throughout: the service calls it through
`trio.to_thread`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from admin.config import Config, MailboxConfig, Secrets

from . import delete as deletion
from . import imap, pop3
from .common import BoxResult, Credential, Progress, PullError, TokenSource, scrub
from .state import PullState
from .writer import PullWriter

log = logging.getLogger("mailtee.pull")

#: progress factory: (mailbox name) -> Progress or None
ProgressFor = Callable[[str], Progress | None]
#: a mailbox that fails this many pulls in a row raises the "pull" alert
ALERT_AFTER_FAILURES = 3
#: (mailbox name, failures in a row, error) -> None; called at ALERT_AFTER_FAILURES and up
AlertHook = Callable[[str, int, str], None]


def _writer(state_dir: Path, box: MailboxConfig) -> Callable[[str | None], PullWriter]:
    return lambda tls: PullWriter(state_dir / "reports", box, tls)


@contextlib.contextmanager
def _mailbox_lock(state_dir: Path, name: str) -> Iterator[None]:
    """One pull per mailbox at a time (the service's schedule and a timer or a person)."""
    path = state_dir / "pull" / f".{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PullError("another pull of this mailbox is running") from None
        yield
    finally:
        os.close(fd)


def pull_one(
    box: MailboxConfig,
    secrets: Secrets,
    state: PullState,
    state_dir: Path,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    tokens: TokenSource | None = None,
) -> BoxResult:
    result = BoxResult(box.name, box.protocol)
    started = time.monotonic()
    cred = Credential()
    try:
        cred = credential(box, secrets, tokens)
        module = imap if box.protocol == "imap" else pop3
        with _mailbox_lock(state_dir, box.name):
            module.pull(
                box,
                cred,
                state,
                _writer(state_dir, box),
                result,
                dry_run=dry_run,
                progress=progress,
            )
    except PullError as e:
        result.fail(str(e))
    except Exception as e:  # noqa: BLE001 - one mailbox must not stop the others
        log.debug("pull %s failed", box.name, exc_info=True)
        result.fail(scrub(f"{type(e).__name__}: {e}", cred.secret))
    result.seconds = time.monotonic() - started
    return result


def credential(box: MailboxConfig, secrets: Secrets, tokens: TokenSource | None) -> Credential:
    """The password of `box`, or an access token of its `account`. Raises PullError."""
    if box.account is not None:
        if tokens is None:
            raise PullError(f"no OAuth2 token source for account {box.account!r}")
        try:
            token, mechanism = tokens(box.account)
            return Credential(token=token, mechanism=mechanism)
        except PullError:
            raise
        except Exception as e:  # noqa: BLE001 - TokenUnavailable, ConfigError, network
            # the account layer's messages never hold a token (accounts/tokens.py)
            raise PullError(f"account {box.account!r}: {e}") from None
    password = secrets.mailbox_password(box.name)
    if password is None:
        raise PullError(
            f"no password in secrets.toml (set one with `proxy-admin mailbox set "
            f"{box.name} --password-stdin`, or use an OAuth2 account: `account = NAME`)"
        )
    return Credential(password=password)


def _ingest(state_dir: Path) -> str | None:
    """Ingest the new reports; None on success, else why the archive was not written."""
    from archive.store import Archive, ArchiveBusy

    try:
        archive = Archive(state_dir)
    except Exception as e:  # noqa: BLE001 - reported, and deletion is skipped
        return f"cannot open the archive: {e}"
    try:
        stats = archive.ingest_pending(state_dir / "reports")
        if stats.errors:
            return f"ingest reported errors: {stats.errors[0]}"
    except ArchiveBusy:
        return None  # the service is ingesting; verification below reads what it wrote
    except Exception as e:  # noqa: BLE001
        return f"cannot write the archive: {e}"
    finally:
        archive.close_quietly()
    return None


def _delete(
    box: MailboxConfig,
    secrets: Secrets,
    state: PullState,
    state_dir: Path,
    result: BoxResult,
    dry_run: bool,
    archive_problem: str | None,
    tokens: TokenSource | None = None,
) -> None:
    from archive.store import Archive

    if archive_problem is None:
        archive_problem = deletion.archive_writable(state_dir)
    if archive_problem is not None and not dry_run:
        result.delete_skipped = f"nothing deleted: {archive_problem}"
        return
    try:
        archive = Archive(state_dir)
    except Exception as e:  # noqa: BLE001
        result.delete_skipped = f"nothing deleted: cannot open the archive: {e}"
        return
    try:
        rows = deletion.verified_candidates(box, state, archive)
    finally:
        archive.close_quietly()
    if dry_run:
        result.would_delete = [{"folder": s.folder, "ref": s.ref, "sha256": s.sha256} for s in rows]
        return
    if not rows:
        return
    cred = Credential()
    try:
        cred = credential(box, secrets, tokens)  # a token may have expired since the pull
        if box.protocol == "imap":
            c = imap.connect(box, cred)
            try:
                done, note = deletion.delete_imap(c, rows)
            finally:
                imap.close(c)
            if note:
                result.delete_skipped = note
        else:
            p = pop3.connect(box, cred)
            done = pop3.delete(p, rows)
            p.quit()  # the deletions take effect only with a successful QUIT
        state.mark_deleted(done)
        result.deleted = len(done)
    except PullError as e:
        result.fail(f"delete: {e}")
    except (*imap.IMAP_ERRORS, *pop3.POP3_ERRORS) as e:
        result.fail(scrub(f"delete: {e}", cred.secret))


def pull_mailboxes(
    config: Config,
    secrets: Secrets,
    state_dir: Path,
    names: Sequence[str] = (),
    *,
    dry_run: bool = False,
    progress_for: ProgressFor | None = None,
    ingest: bool = True,
    on_repeated_failure: AlertHook | None = None,
    tokens: TokenSource | None = None,
) -> list[BoxResult]:
    """Pull the named mailboxes (all when `names` is empty); never raises for one box.

    `tokens(account)` -> an access token, for mailboxes with `account` (accounts.blocking).
    """
    boxes = [config.get_mailbox(n) for n in names] if names else list(config.mailbox)
    state = PullState(state_dir)
    try:
        kept, _dropped = state.recover(
            state_dir / "reports", state_dir / "archive" / "catalog.sqlite"
        )
        results = []
        for box in boxes:
            progress = progress_for(box.name) if progress_for else None
            r = pull_one(
                box, secrets, state, state_dir, dry_run=dry_run, progress=progress, tokens=tokens
            )
            results.append(r)
            _log(r, dry_run)
            if not dry_run:
                failures = state.record_run(box.name, r.ok, r.error)
                if failures >= ALERT_AFTER_FAILURES and on_repeated_failure is not None:
                    on_repeated_failure(box.name, failures, r.error or "")
        if results and kept:
            results[0].recovered = kept
        problem = None
        if not dry_run and ingest and any(r.new for r in results):
            problem = _ingest(state_dir)
            if problem:
                log.error("pull: %s", problem)
        elif not dry_run and not ingest:
            problem = "ingest left to the service"
        for box, r in zip(boxes, results, strict=True):
            if box.delete_after_days is not None and r.ok:
                _delete(box, secrets, state, state_dir, r, dry_run, problem, tokens)
        return results
    finally:
        state.close()


def _log(r: BoxResult, dry_run: bool) -> None:
    if not r.ok:
        log.error("pull %s failed: %s", r.name, r.error)
    elif r.new or dry_run:
        verb = "would archive" if dry_run else "archived"
        log.info("pull %s: %s %d message(s)", r.name, verb, r.new)


def summary(results: Sequence[BoxResult]) -> dict[str, Any]:
    return {
        "ok": all(r.ok for r in results),
        "mailboxes": [r.as_dict() for r in results],
        "new": sum(r.new for r in results),
        "deleted": sum(r.deleted for r in results),
        "failed": [r.name for r in results if not r.ok],
    }
