"""The one UTC time formatter: ISO 8601 with a `Z`, as reports, catalog rows, status
replies, alerts and the token store write it.

Three precisions are in use and each caller keeps its own, because the stored formats
must not change (catalog rows sort as text; `.mpr` files and status replies are read by
other tools):

- seconds, `2026-01-02T03:04:05Z`: status, reload and alert times, pulled IMAP dates,
  message dates in exports, certificate validity, the token store;
- milliseconds, `2026-01-02T03:04:05.678Z`: a report's `received_at` (archive/spool.py);
- microseconds, `2026-01-02T03:04:05.678901Z`: catalog rows (`now_iso`).

It lives in archive/ because archive/ is the bottom layer every other package already
imports (proxy/, accounts/, web/ and admin/ all take from it); it imports nothing of
the project.
"""

from __future__ import annotations

import datetime as dt

_SECONDS = "%Y-%m-%dT%H:%M:%S"


def utc_iso(t: dt.datetime | float, *, digits: int = 0) -> str:
    """`t` (an epoch, an aware datetime, or a naive one taken as UTC) in UTC with `Z`,
    with `digits` (0, 3 or 6) decimals of the second, truncated, never rounded."""
    if isinstance(t, int | float):
        t = dt.datetime.fromtimestamp(t, dt.UTC)
    elif t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    else:
        t = t.astimezone(dt.UTC)
    text = t.strftime(_SECONDS)
    if digits:
        text += "." + f"{t.microsecond:06d}"[:digits]
    return text + "Z"


def now_iso(*, digits: int = 6) -> str:
    """Now; to the microsecond by default (the catalog's `created_at`/`at` columns)."""
    return utc_iso(dt.datetime.now(dt.UTC), digits=digits)


def iso_millis(t: dt.datetime) -> str:
    """`t` to the millisecond: a report's `received_at`."""
    return utc_iso(t, digits=3)
