"""Logging set-up for `proxy-admin run` (and whatever else logs): one line per record.

Kept out of admin.cli_common so that commands that never log do not import `logging`
(start-up time, issue 12 item 4).
"""

from __future__ import annotations

import logging
import os
import sys


class OneLineFormatter(logging.Formatter):
    """One line per record, even for tracebacks (journald and grep both like that)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if text.isprintable():  # the common case: nothing that splitlines() would split
            return text
        return " | ".join(part for part in text.splitlines() if part)


def _add_syslog_priority(record: logging.LogRecord) -> bool:
    levels = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
    record.syslog_priority = next((p for lvl, p in levels if record.levelno >= lvl), 7)
    return True


def setup_logging(level: str) -> logging.Handler:
    """Log to stderr at `level`; no timestamps under systemd (journald adds its own).

    Returns the handler so a caller (or a test) can remove it again.
    """
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        # "<N>" prefixes are syslog priorities journald understands (sd-daemon(3)), so
        # `journalctl -p warning` filters mailtee's lines.
        handler.addFilter(_add_syslog_priority)
        fmt = "<%(syslog_priority)d>%(levelname)s %(name)s: %(message)s"
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(OneLineFormatter(fmt))
    # The formats above use none of these; collecting them per record (a stack walk for
    # the caller, thread and process look-ups) cost more than formatting the line on the
    # SMTP hot path (one transaction line per message). Logging HOWTO, "Optimization".
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler
