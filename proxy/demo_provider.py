"""A built-in demo mail provider, so `make run` works offline.

Theory of operation. The demo provider stands in for "the provider" behind the proxy:
an SMTP server (aiosmtpd, in its own thread and asyncio loop) that delivers every
message into a Maildir per recipient address, and a small POP3 server (a threaded
`socketserver`) that serves the Maildir named by the USER command. Messages are stored as
the exact bytes the SMTP client sent (after dot-unstuffing), and RETR returns them
byte for byte (dot-stuffed on the wire), so a demo can check end-to-end transparency.

It is deliberately simple: no authentication (any password is accepted), loopback only,
no TLS. It is a demo and test fixture, not a mail server. The API is synchronous;
the trio service calls `start()` / `stop()` through `trio.to_thread.run_sync`.

    provider = DemoProvider(state_dir / "demo-mail", smtp_port=2526, pop3_port=2111)
    provider.start()          # raises OSError when a port is taken
    ...
    provider.stop()
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import socketserver
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller

if TYPE_CHECKING:
    from admin.config import Config

log = logging.getLogger("mailtee.demo")

DEMO_MAIL_DIR_NAME = "demo"
SERVER_NAME = "demo.mailtee.invalid"
#: RFC 2449 section 4: a POP3 command line is at most 255 octets including CRLF.
POP3_MAX_COMMAND = 255
#: RFC 1939 section 3: the autologout timer is at least 10 minutes.
POP3_IDLE_TIMEOUT = 600.0
#: Same as the proxy's default limits.max_message_size.
SMTP_MAX_MESSAGE = 100 * 1024 * 1024

_DOT_AT_LINE_START = re.compile(rb"(?m)^\.")


def demo_mail_dir(state_dir: Path) -> Path:
    """Where the demo provider keeps its Maildirs inside the state directory."""
    return state_dir / DEMO_MAIL_DIR_NAME


def mailbox_name(address: str) -> str | None:
    """The Maildir folder name of an address or POP3 user, or None if it is unsafe."""
    name = address.strip().strip("<>").lower()
    if not name or name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
        return None
    if any(ord(c) < 0x21 for c in name) or len(name) > 255:
        return None
    return name


_SEQUENCE = itertools.count()


def _unique_name() -> str:
    """Unique, and sorting by name gives delivery order (the POP3 message numbers)."""
    return f"{time.time_ns()}.{next(_SEQUENCE) % 1_000_000:06d}.{uuid.uuid4().hex[:12]}"


def deliver(mail_dir: Path, address: str, content: bytes) -> Path:
    """Store `content` in the Maildir of `address` (tmp/ then rename to new/)."""
    name = mailbox_name(address)
    if name is None:
        raise ValueError(f"unsafe mailbox name {address!r}")
    box = mail_dir / name
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    unique = _unique_name()
    tmp = box / "tmp" / unique
    with open(tmp, "xb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    final = box / "new" / unique
    os.replace(tmp, final)
    return final


# --- SMTP ---------------------------------------------------------------------------


class _DeliveryHandler:
    """aiosmtpd handler: accept every recipient, one Maildir file per recipient."""

    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list
    ) -> str:
        if mailbox_name(address) is None:
            return "553 5.1.3 demo provider: unusable mailbox name"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        content: bytes = envelope.original_content
        try:
            for rcpt in envelope.rcpt_tos:
                deliver(self.mail_dir, rcpt, content)
        except OSError as e:
            log.warning("demo provider: cannot store message: %s", e.strerror)
            return "451 4.3.0 demo provider: cannot store message"
        log.info("demo provider: delivered %d bytes to %s", len(content), envelope.rcpt_tos)
        return f"250 2.0.0 OK: delivered to {len(envelope.rcpt_tos)} mailbox(es)"


class _SmtpController(Controller):
    """aiosmtpd's Controller, made to work with port 0 (pick a free port)."""

    def _trigger_server(self) -> None:
        if self.port == 0 and self.server is not None:
            self.port = self.server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        super()._trigger_server()


# --- POP3 ---------------------------------------------------------------------------


@dataclass
class _Message:
    path: Path
    size: int
    uidl: str
    deleted: bool = False


class _Pop3Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], mail_dir: Path) -> None:
        self.mail_dir = mail_dir
        self.locks: set[str] = set()
        self.locks_guard = threading.Lock()
        super().__init__(address, _Pop3Handler)


class _Pop3Handler(socketserver.StreamRequestHandler):
    """One POP3 session (RFC 1939): AUTHORIZATION, TRANSACTION, UPDATE."""

    server: _Pop3Server
    timeout = POP3_IDLE_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.user: str | None = None
        self.mailbox: str | None = None
        self.messages: list[_Message] = []

    # -- wire helpers --
    def send(self, line: str) -> None:
        self.wfile.write(line.encode("utf-8") + b"\r\n")

    def send_multi(self, first: str, body: bytes) -> None:
        if body and not body.endswith(b"\r\n"):
            body += b"\r\n"
        self.wfile.write(first.encode() + b"\r\n" + _DOT_AT_LINE_START.sub(b"..", body) + b".\r\n")

    def handle(self) -> None:
        self.send("+OK mailtee demo POP3 server ready")
        try:
            while True:
                line = self.rfile.readline(POP3_MAX_COMMAND + 1)
                if not line:
                    return
                if len(line) > POP3_MAX_COMMAND or not line.endswith(b"\n"):
                    self.send("-ERR command line too long")
                    return
                words = line.decode("utf-8", "replace").rstrip("\r\n").split(" ")
                verb, args = words[0].upper(), [w for w in words[1:] if w]
                if not self.dispatch(verb, args):
                    return
        except (TimeoutError, ConnectionError):
            return
        finally:
            self.unlock()

    def dispatch(self, verb: str, args: list[str]) -> bool:
        """Run one command; False ends the session."""
        if verb == "QUIT":
            return self.quit()
        if verb == "CAPA":
            caps = "USER\r\nUIDL\r\nTOP\r\nPIPELINING\r\nRESP-CODES\r\nIMPLEMENTATION mailtee-demo"
            self.send_multi("+OK capability list follows", caps.encode() + b"\r\n")
        elif verb == "NOOP":
            self.send("+OK")
        elif self.mailbox is None:
            self.authorization(verb, args)
        else:
            handler = getattr(self, f"cmd_{verb.lower()}", None)
            if verb.isalpha() and handler is not None:
                handler(args)
            else:
                self.send("-ERR unknown command")
        return True

    # -- AUTHORIZATION --
    def authorization(self, verb: str, args: list[str]) -> None:
        if verb == "USER" and len(args) == 1:
            self.user = args[0]
            self.send("+OK send PASS (any password works here)")
        elif verb == "PASS" and self.user is not None:
            self.login(self.user)
        elif verb == "PASS":
            self.send("-ERR USER first")
        else:
            self.send("-ERR not authenticated")

    def login(self, user: str) -> None:
        name = mailbox_name(user)
        if name is None:
            self.user = None
            self.send("-ERR [AUTH] no such mailbox")
            return
        with self.server.locks_guard:
            if name in self.server.locks:
                self.user = None
                self.send("-ERR [IN-USE] mailbox is locked by another session")
                return
            self.server.locks.add(name)
        self.mailbox = name
        self.messages = self.scan(self.server.mail_dir / name)
        total = sum(m.size for m in self.messages)
        self.send(f"+OK {len(self.messages)} messages ({total} octets)")

    @staticmethod
    def scan(box: Path) -> list[_Message]:
        files: list[Path] = []
        for sub in ("cur", "new"):
            with contextlib.suppress(FileNotFoundError):
                files.extend(p for p in (box / sub).iterdir() if not p.name.startswith("."))
        files.sort(key=lambda p: p.name)
        return [_Message(p, p.stat().st_size, p.name.split(":", 1)[0][:70]) for p in files]

    def unlock(self) -> None:
        if self.mailbox is not None:
            with self.server.locks_guard:
                self.server.locks.discard(self.mailbox)
            self.mailbox = None

    # -- TRANSACTION --
    def message(self, arg: str) -> _Message | None:
        try:
            n = int(arg)
        except ValueError:
            n = 0
        if not 1 <= n <= len(self.messages) or self.messages[n - 1].deleted:
            self.send("-ERR no such message")
            return None
        return self.messages[n - 1]

    def listing(self, args: list[str], what: str) -> None:
        def value(m: _Message) -> str:
            return str(m.size) if what == "size" else m.uidl

        if args:
            m = self.message(args[0])
            if m is not None:
                self.send(f"+OK {args[0]} {value(m)}")
            return
        lines = [f"{i} {value(m)}" for i, m in enumerate(self.messages, 1) if not m.deleted]
        body = "".join(line + "\r\n" for line in lines).encode()
        self.send_multi("+OK listing follows", body)

    def cmd_stat(self, args: list[str]) -> None:
        live = [m for m in self.messages if not m.deleted]
        self.send(f"+OK {len(live)} {sum(m.size for m in live)}")

    def cmd_list(self, args: list[str]) -> None:
        self.listing(args, "size")

    def cmd_uidl(self, args: list[str]) -> None:
        self.listing(args, "uidl")

    def read(self, m: _Message) -> bytes | None:
        try:
            return m.path.read_bytes()
        except OSError:
            self.send("-ERR message is gone")
            return None

    def cmd_retr(self, args: list[str]) -> None:
        m = self.message(args[0]) if len(args) == 1 else None
        if len(args) != 1:
            self.send("-ERR usage: RETR msg")
        if m is not None and (data := self.read(m)) is not None:
            self.send_multi(f"+OK {len(data)} octets", data)

    def cmd_top(self, args: list[str]) -> None:
        if len(args) != 2 or not args[1].isdigit():
            self.send("-ERR usage: TOP msg lines")
            return
        m = self.message(args[0])
        if m is None or (data := self.read(m)) is None:
            return
        lines = data.splitlines(keepends=True)
        for i, line in enumerate(lines):
            if line in (b"\r\n", b"\n"):
                end = i + 1 + int(args[1])
                break
        else:
            end = len(lines)
        self.send_multi("+OK top of message follows", b"".join(lines[:end]))

    def cmd_dele(self, args: list[str]) -> None:
        m = self.message(args[0]) if len(args) == 1 else None
        if len(args) != 1:
            self.send("-ERR usage: DELE msg")
        if m is not None:
            m.deleted = True
            self.send(f"+OK message {args[0]} deleted")

    def cmd_rset(self, args: list[str]) -> None:
        for m in self.messages:
            m.deleted = False
        self.send(f"+OK {len(self.messages)} messages")

    # -- UPDATE --
    def quit(self) -> bool:
        if self.mailbox is None:
            self.send("+OK bye")
            return False
        failed = 0
        for m in self.messages:
            if m.deleted:
                try:
                    m.path.unlink()
                except FileNotFoundError:
                    pass
                except OSError:
                    failed += 1
        self.unlock()  # before the reply: a client may reconnect as soon as it sees it
        if failed:
            self.send(f"-ERR {failed} messages could not be deleted")
        else:
            self.send("+OK bye")
        return False


# --- the provider -------------------------------------------------------------------


class DemoProvider:
    """SMTP + POP3 demo provider on loopback; `start()`/`stop()` are synchronous.

    Ports may be 0 (any free port); after `start()` the attributes `smtp_port` and
    `pop3_port` hold the ports actually bound.
    """

    def __init__(
        self, mail_dir: Path, smtp_port: int, pop3_port: int, host: str = "127.0.0.1"
    ) -> None:
        self.mail_dir = Path(mail_dir)
        self.smtp_port = smtp_port
        self.pop3_port = pop3_port
        self.host = host
        self._smtp: _SmtpController | None = None
        self._pop3: _Pop3Server | None = None
        self._pop3_thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: Config, state_dir: Path) -> DemoProvider:
        """The provider `run` starts when `[demo] enabled = true`."""
        return cls(demo_mail_dir(state_dir), config.demo.smtp_port, config.demo.pop3_port)

    @property
    def running(self) -> bool:
        return self._smtp is not None or self._pop3 is not None

    def start(self) -> None:
        """Bind both ports and serve in background threads. Raises OSError on failure."""
        if self.running:
            raise RuntimeError("demo provider already started")
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        # aiosmtpd logs every connection at INFO; the demo's own log line is enough.
        aiosmtpd_log = logging.getLogger("mail.log")
        if aiosmtpd_log.level == logging.NOTSET:
            aiosmtpd_log.setLevel(logging.WARNING)
        smtp = _SmtpController(
            _DeliveryHandler(self.mail_dir),
            hostname=self.host,
            port=self.smtp_port,
            server_hostname=SERVER_NAME,
            enable_SMTPUTF8=True,
            data_size_limit=SMTP_MAX_MESSAGE,
            ident="mailtee demo SMTP",
        )
        try:
            smtp.start()
        except OSError as e:
            smtp.loop.close()
            raise OSError(
                e.errno,
                f"demo provider: cannot listen on {self.host}:{self.smtp_port}: {e.strerror}",
            ) from None
        self._smtp = smtp
        self.smtp_port = smtp.port
        try:
            pop3 = _Pop3Server((self.host, self.pop3_port), self.mail_dir)
        except OSError as e:
            self.stop()
            raise OSError(
                e.errno,
                f"demo provider: cannot listen on {self.host}:{self.pop3_port}: {e.strerror}",
            ) from None
        self._pop3 = pop3
        self.pop3_port = pop3.server_address[1]
        self._pop3_thread = threading.Thread(
            target=pop3.serve_forever, kwargs={"poll_interval": 0.2}, name="demo-pop3", daemon=True
        )
        self._pop3_thread.start()
        log.info(
            "demo provider: SMTP %s:%d, POP3 %s:%d, mail in %s",
            self.host, self.smtp_port, self.host, self.pop3_port, self.mail_dir,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop both servers and wait for their threads. Safe to call more than once."""
        smtp, self._smtp = self._smtp, None
        pop3, self._pop3 = self._pop3, None
        thread, self._pop3_thread = self._pop3_thread, None
        if smtp is not None:
            smtp.stop()
            smtp.loop.close()
        if pop3 is not None:
            pop3.shutdown()
            pop3.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> DemoProvider:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
