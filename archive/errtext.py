"""The one exception-to-text helper: what an operator reads about a failure, in a CLI
error line, a log line, an alert, a status reply or the web admin page.

The text is the exception's own message (each package's messages are written to carry
no password, token or cookie; DESIGN invariant 5) or, for an `OSError`, the file name(s)
and the system's reason, never the `repr` or a traceback, so nothing the exception
holds beyond its message (arguments, locals) can leak. Where a caller knows a secret
that might be echoed (a mailbox password in a server's reply), it still scrubs the text
itself (archive/pull/common.scrub).

It lives in archive/, the bottom layer every package already imports, and imports
nothing of the project.
"""

from __future__ import annotations


def describe(e: BaseException, *, limit: int | None = None) -> str:
    """One line about `e`: "file: reason" for an OSError, else its message, else its class
    name. With `limit`, only the first line of the message, cut to `limit` characters
    (for text of foreign libraries that may run over several lines: ldap3, the control
    socket's peer)."""
    if isinstance(e, OSError):
        text = _os_error(e)
    else:
        text = str(e) or type(e).__name__
    if limit is not None:
        text = text.splitlines()[0][:limit] if text else text
    return text


def _os_error(e: OSError) -> str:
    reason = e.strerror or str(e) or type(e).__name__
    if e.filename is not None:
        where = f"{e.filename}"
        if e.filename2 is not None:
            where += f" -> {e.filename2}"
        return f"{where}: {reason}"
    return reason
