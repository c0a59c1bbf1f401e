"""The one UTC formatter writes exactly what the copies it replaced wrote (reports,
catalog rows, status replies and the token store must not change format)."""

from __future__ import annotations

import datetime as dt
import time

from archive.pull.common import iso
from archive.store import iso_utc
from archive.timefmt import iso_millis, now_iso, utc_iso

EPOCH = 1_767_323_045.678901  # 2026-01-02T03:04:05.678901Z
AWARE = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)


def test_seconds_match_time_strftime_of_gmtime() -> None:
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))  # workers/serve/alerts
    assert utc_iso(EPOCH) == old == "2026-01-02T03:04:05Z"
    assert utc_iso(int(EPOCH)) == old


def test_precisions_truncate_as_before() -> None:
    assert iso_millis(AWARE) == "2026-01-02T03:04:05.678Z"  # spool: microsecond // 1000
    assert utc_iso(AWARE, digits=6) == AWARE.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # catalog
    assert utc_iso(AWARE.replace(microsecond=999999), digits=3).endswith("05.999Z")


def test_zones_and_naive_times_become_utc() -> None:
    plus9 = AWARE.astimezone(dt.timezone(dt.timedelta(hours=9)))
    assert utc_iso(plus9) == "2026-01-02T03:04:05Z"  # certificates, IMAP dates
    assert utc_iso(AWARE.replace(tzinfo=None)) == "2026-01-02T03:04:05Z"  # naive = UTC


def test_callers_keep_their_empty_values() -> None:
    assert iso(None) is None and iso(EPOCH) == "2026-01-02T03:04:05Z"
    assert iso_utc(None) == "" and iso_utc(0) == "" and iso_utc(10**20) == ""
    assert iso_utc(int(EPOCH)) == "2026-01-02T03:04:05Z"


def test_now_has_the_catalog_shape() -> None:
    text = now_iso()
    assert len(text) == len("2026-01-02T03:04:05.678901Z") and text.endswith("Z")
    assert len(now_iso(digits=0)) == len("2026-01-02T03:04:05Z")
