"""The Trio driver of one journal-listener session (`protocol = "smtp-journal"`).

Theory of operation. The protocol is proxy/smtp/receive.py's sans-IO core; this driver
reads the client with the idle timeout, performs the core's actions and answers the
three that need an answer. The message streams into an anonymous temporary file in the
report directory (bounded memory; gone by itself if the process dies). At the final
dot a worker thread decides what to archive -- the original inside an Exchange journal
report (archive/pull/journal.py), or the message as received -- writes it through the
spool (archive/spool.py) and makes it durable; only then does the core send 250.
Local passwords (AUTH) are verified with archive/logins.py in a worker thread.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
from functools import partial
from pathlib import Path
from typing import IO, Any

import trio

from admin.config import ListenerConfig
from archive.spool import Spool, SpoolError
from proxy.session import STREAM_ERRORS, SessionEnv
from proxy.settings import RelaySettings
from proxy.smtp import receive as J
from proxy.tls import wrap

log = logging.getLogger("mailtee.journal")

RECEIVE_SIZE = 64 * 1024
#: message bytes kept in memory before the temporary file goes to disk
SPOOL_MEMORY = 1024 * 1024
COPY_CHUNK = 1024 * 1024
#: head bytes looked at to recognise an Exchange journal report
HEAD_BYTES = 256 * 1024


def archive_journal_message(
    spool: Spool, tmp: IO[bytes], envelope: dict[str, Any], context: dict[str, Any]
) -> str:
    """Write what `tmp` holds (unwrapped if it is a journal report); blocking. Returns
    "exchange" or "plain". Raises SpoolError when the copy is not durable."""
    from archive.pull.journal import is_journal_report, unwrap

    tmp.seek(0)
    head = tmp.read(HEAD_BYTES)
    unwrapped = None
    if is_journal_report(head):
        tmp.seek(0)
        unwrapped = unwrap(tmp.read())  # bounded by the listener's max_message_size
    smtp = dict(envelope)
    journal: dict[str, Any] = {"format": "plain"}
    if unwrapped is not None:
        smtp["mail_from"] = unwrapped.sender or envelope.get("mail_from")
        smtp["rcpt_to"] = unwrapped.recipients
        journal = {
            "format": "exchange",
            "envelope_mail_from": envelope.get("mail_from"),
            "envelope_rcpt_to": envelope.get("rcpt_to"),
            "report_message_id": unwrapped.message_id,
        }
    report = {**context, "direction": "journal", "target": None, "smtp": smtp, "pop3": None}
    report["journal"] = journal
    writer = spool.open_message("smtp-journal", report)
    if unwrapped is not None:
        writer.write(unwrapped.original)
    else:
        tmp.seek(0)
        while chunk := tmp.read(COPY_CHUNK):
            writer.write(chunk)
    writer.commit("delivered", None)
    return journal["format"]


def check_local_password(state_dir: Path, login: str, password: str) -> bool:
    from archive.catalog import Catalog
    from archive.logins import resolve_login, verify_password

    path = state_dir / "archive" / "catalog.sqlite"
    if not path.exists():
        return False
    cat = Catalog(path)
    try:
        name = resolve_login(cat, login)
        return verify_password(cat, name or login, password)
    finally:
        cat.close()


class JournalSession:
    def __init__(
        self,
        lc: ListenerConfig,
        env: SessionEnv,
        settings: RelaySettings,
        client: trio.abc.Stream,
        peer: tuple[Any, ...],
    ) -> None:
        self.env = env
        self.client = client
        self.peer = peer
        self.tls_version: str | None = None
        self.core = J.JournalReceiver(
            J.ReceiveSettings(
                hostname=settings.hostname,
                client_tls=lc.client_tls,
                require_auth=bool(getattr(lc, "local_login", False)),
                max_line_length=settings.max_line_length,
                max_message_size=settings.max_message_size,
                max_commands=settings.max_commands,
            )
        )
        self.tmp: IO[bytes] | None = None
        self.envelope: dict[str, Any] = {}

    async def run(self) -> None:
        try:
            if self.env.client_tls == "implicit" and not await self._tls():
                return
            self.core.start()
            while True:
                if not await self._perform():
                    return
                if not self.core.reading:
                    continue
                with trio.move_on_after(self.env.idle_timeout) as scope:
                    data = await self.client.receive_some(RECEIVE_SIZE)
                if scope.cancelled_caught:
                    self.core.timeout()
                    continue
                self.core.receive(bytes(data))
        except STREAM_ERRORS:
            pass
        finally:
            self._drop_tmp()

    async def _tls(self) -> bool:
        if self.env.server_ctx is None:
            return False
        try:
            tls = await wrap(
                self.client,
                self.env.server_ctx,
                server_side=True,
                timeout=self.env.connect_timeout,
            )
        except (trio.TooSlowError, *STREAM_ERRORS) as e:
            log.warning("TLS with the client failed: %s", type(e).__name__)
            return False
        self.client = tls
        self.tls_version = tls.version()
        return True

    def _drop_tmp(self) -> None:
        if self.tmp is not None:
            self.tmp.close()
            self.tmp = None

    async def _perform(self) -> bool:
        """Run the core's actions (and those their answers cause); False once over."""
        while actions := self.core.actions():
            if not await self._perform_some(actions):
                return False
        return True

    async def _perform_some(self, actions: list[J.Action]) -> bool:
        for action in actions:
            if isinstance(action, J.Send):
                await self.client.send_all(action.data)
            elif isinstance(action, J.StartTls):
                if not await self._tls():
                    return False
                self.core.tls_started()
            elif isinstance(action, J.CheckLogin):
                ok = await trio.to_thread.run_sync(
                    check_local_password,
                    self.env.spool.reports_dir.parent,
                    action.user,
                    action.password,
                )
                log.info("journal AUTH user=%s ok=%s", action.user, ok)
                self.core.login_result(ok)
            elif isinstance(action, J.BeginMessage):
                self._drop_tmp()
                self.tmp = tempfile.SpooledTemporaryFile(
                    SPOOL_MEMORY, dir=str(self.env.spool.reports_dir)
                )
                self.envelope = action.envelope
            elif isinstance(action, J.MessageData):
                assert self.tmp is not None
                self.tmp.write(action.data)
            elif isinstance(action, J.AbortMessage):
                self._drop_tmp()
            elif isinstance(action, J.EndMessage):
                self.core.commit_result(await self._commit())
            elif isinstance(action, J.Close):
                return False
        return True

    async def _commit(self) -> bool:
        assert self.tmp is not None
        context = {
            "listener": self.env.listener,
            "client": {"ip": self.peer[0], "port": self.peer[1], "tls": self.tls_version},
        }
        try:
            kind = await trio.to_thread.run_sync(
                partial(archive_journal_message, self.env.spool, self.tmp, self.envelope, context)
            )
        except (SpoolError, OSError, ssl.SSLError) as e:
            self.env.stats.archive_failed(str(e))
            log.error("journal message not archived (451 to the sender): %s", e)
            return False
        finally:
            self._drop_tmp()
        log.info(
            "journal message archived listener=%s client=%s kind=%s rcpts=%d",
            self.env.listener,
            self.peer[0],
            kind,
            len(self.envelope.get("rcpt_to") or []),
        )
        return True
