"""Alerts: archive failures, verify failures and low disk -> the log and an email.

Theory of operation. Anything that goes wrong calls `Alerter.alert(kind, summary)`, a
plain synchronous call that never blocks: it logs at ERROR, remembers the alert for
`status` ("last errors"), and, if mail is configured and the kind has not been mailed in
the last `min_interval` seconds, queues one message. Alerts suppressed by that rate limit
are counted and the count goes into the next mail of the same kind, so a broken disk
gives one mail per interval, not one per rejected message. `Alerter.run()` drains the
queue, sending through the configured relay with smtplib in a worker thread (with a
timeout), so the Trio loop never waits for the relay.

Watchers feed it: `watch_stats` turns a growing `archive_failures` counter (kept by the
sessions, proxy/session.py) into one alert per check; `watch_disk` checks the free space
of the state directory. Code outside the service (`proxy-admin verify`) uses
`send_alert_now`, which logs and mails synchronously.
"""

from __future__ import annotations

import collections
import email.utils
import logging
import shutil
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trio

from admin.config import AlertsConfig
from archive.errtext import describe
from archive.timefmt import now_iso
from proxy.stats import ServiceStats

log = logging.getLogger("mailtee.alerts")

#: the kinds of alert; each is rate-limited on its own
KINDS = ("archive", "verify", "low_disk", "reload", "account")
#: how many recent alerts `status` shows
RECENT = 20
#: mails waiting for the relay; more are dropped (and logged) rather than piling up
QUEUE_SIZE = 16
MB = 1024 * 1024

Sender = Callable[[AlertsConfig, EmailMessage], None]


@dataclass
class _Kind:
    last_mail: float | None = None
    suppressed: int = 0


def sender_address(cfg: AlertsConfig, hostname: str) -> str:
    return cfg.from_address or f"mailtee@{hostname}"


def build_message(
    cfg: AlertsConfig, hostname: str, kind: str, summary: str, detail: str, suppressed: int = 0
) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"[mailtee {hostname}] {kind}: {summary}"
    msg["From"] = sender_address(cfg, hostname)
    msg["To"] = ", ".join(cfg.to)
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=hostname)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    body = [f"mailtee on {hostname} raised a {kind} alert.", "", summary]
    if detail:
        body += ["", detail]
    if suppressed:
        body += ["", f"{suppressed} more {kind} alert(s) since the last mail were not mailed."]
    body += ["", "See `proxy-admin status` and the service log (journalctl -u mailtee)."]
    msg.set_content("\n".join(body) + "\n")
    return msg


def send_message(cfg: AlertsConfig, msg: EmailMessage) -> None:
    """Deliver one alert through the relay (blocking; call it from a worker thread)."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not cfg.smtp_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    client: smtplib.SMTP
    if cfg.smtp_tls == "implicit":
        client = smtplib.SMTP_SSL(
            cfg.smtp_host, cfg.smtp_port, timeout=cfg.smtp_timeout, context=ctx
        )
    else:
        client = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.smtp_timeout)
    with client:
        if cfg.smtp_tls == "starttls":
            client.starttls(context=ctx)
        client.send_message(msg, from_addr=msg["From"], to_addrs=list(cfg.to))


class Alerter:
    """Log, remember and (rate-limited) mail alerts; see the module docstring."""

    def __init__(
        self,
        cfg: AlertsConfig,
        hostname: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sender: Sender = send_message,
    ) -> None:
        self.cfg = cfg
        self.hostname = hostname
        self.clock = clock
        self.sender = sender
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT)
        self.mailed = 0
        self.mail_failures = 0
        self.disk_free: int | None = None
        self._kinds: dict[str, _Kind] = collections.defaultdict(_Kind)
        self._send, self._receive = trio.open_memory_channel[EmailMessage](QUEUE_SIZE)

    def configure(self, cfg: AlertsConfig, hostname: str) -> None:
        """Take a reloaded `[alerts]` section (rate-limit state is kept)."""
        self.cfg, self.hostname = cfg, hostname

    def alert(self, kind: str, summary: str, detail: str = "") -> bool:
        """Raise an alert; True if a mail was queued for it."""
        log.error("alert %s: %s%s", kind, summary, f" ({detail})" if detail else "")
        self.recent.append(
            {
                "at": now_iso(digits=0),
                "kind": kind,
                "summary": summary,
            }
        )
        if not self.cfg.mail_enabled:
            return False
        state = self._kinds[kind]
        now = self.clock()
        if state.last_mail is not None and now - state.last_mail < self.cfg.min_interval:
            state.suppressed += 1
            return False
        msg = build_message(self.cfg, self.hostname, kind, summary, detail, state.suppressed)
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            log.error("alert mail queue is full; %s alert not mailed", kind)
            state.suppressed += 1
            return False
        state.last_mail, state.suppressed = now, 0
        return True

    async def run(self) -> None:
        """Send queued alert mails until cancelled (one at a time, in a worker thread)."""
        async for msg in self._receive:
            cfg = self.cfg
            try:
                await trio.to_thread.run_sync(self.sender, cfg, msg, abandon_on_cancel=True)
            except (OSError, smtplib.SMTPException, ssl.SSLError) as e:
                self.mail_failures += 1
                reason = describe(e)
                log.error(
                    "could not mail alert via %s:%d: %s", cfg.smtp_host, cfg.smtp_port, reason
                )
            else:
                self.mailed += 1
                log.info("alert mailed to %s: %s", ", ".join(cfg.to), msg["Subject"])


async def watch_stats(alerter: Alerter, stats: ServiceStats, interval: float = 1.0) -> None:
    """One `archive` alert per check in which `stats.archive_failures` grew."""
    seen = stats.archive_failures
    while True:
        await trio.sleep(interval)
        now = stats.archive_failures
        if now > seen:
            alerter.alert(
                "archive",
                f"{now - seen} message(s) could not be archived",
                f"last error: {stats.last_error or 'unknown'}",
            )
        seen = now


class DiskWatch:
    """`low_disk` alert when free space drops below the threshold, repeated every
    `min_interval` while it stays low; one log line when it recovers."""

    def __init__(self, alerter: Alerter, path: Path) -> None:
        self.alerter = alerter
        self.path = path
        self.low_since: float | None = None

    def check(self, free: int) -> None:
        alerter = self.alerter
        alerter.disk_free = free
        threshold = alerter.cfg.low_disk_mb * MB
        if free < threshold:
            now = alerter.clock()
            if self.low_since is None or now - self.low_since >= alerter.cfg.min_interval:
                self.low_since = now
                alerter.alert(
                    "low_disk",
                    f"{free // MB} MB free in {self.path} (threshold {alerter.cfg.low_disk_mb} MB)",
                    "Free some space, or the proxy will start refusing mail (451 4.3.0).",
                )
        elif self.low_since is not None:
            self.low_since = None
            log.info("free disk space in %s is back above the threshold", self.path)


async def watch_disk(
    alerter: Alerter,
    path: Path,
    interval: float = 60.0,
    usage: Callable[[Path], Any] = shutil.disk_usage,
) -> None:
    """Check the free space under `path` every `interval` seconds (in a worker thread)."""
    watch = DiskWatch(alerter, path)
    while True:
        try:
            free = (await trio.to_thread.run_sync(usage, path)).free
        except OSError as e:
            alerter.disk_free = None
            log.warning("cannot check free disk space of %s: %s", path, e.strerror or e)
        else:
            watch.check(free)
        await trio.sleep(interval)


def send_alert_now(
    cfg: AlertsConfig, hostname: str, kind: str, summary: str, detail: str = ""
) -> bool:
    """Log and mail one alert synchronously (for CLI commands such as `verify`)."""
    log.error("alert %s: %s%s", kind, summary, f" ({detail})" if detail else "")
    if not cfg.mail_enabled:
        return False
    try:
        send_message(cfg, build_message(cfg, hostname, kind, summary, detail))
    except (OSError, smtplib.SMTPException, ssl.SSLError) as e:
        log.error("could not mail alert via %s:%d: %s", cfg.smtp_host, cfg.smtp_port, e)
        return False
    return True
