"""Issue 5 acceptance, end to end: mail sent through the SMTP listener becomes searchable.

The service's background ingest (`proxy.ingest_task.ingest_loop`, as `proxy-admin run`
starts it) picks up the report the relay wrote before the client's 250. The time from
the 250 to the first successful search is measured and printed; the test itself only
gives up after a generous limit (no timing thresholds in tests; see docs/performance.md).
"""

from __future__ import annotations

import hashlib
import time
from functools import partial

import pytest
import trio

from archive.store import Archive
from fixtures import mails
from fixtures.smtp_clients import smtplib_session
from proxy.ingest_task import ingest_loop

pytestmark = pytest.mark.e2e


async def _search_until_found(archive: Archive, query: str, limit: float) -> list:
    with trio.fail_after(limit):
        while True:
            hits = await trio.to_thread.run_sync(archive.search, query)
            if hits:
                return hits
            await trio.sleep(0.02)


async def test_japanese_subject_sent_through_smtp_is_found(smtp_upstream, make_proxy, nursery):
    up = smtp_upstream()
    proxy = await make_proxy([{"name": "smtp", "target_port": up.port}])
    nursery.start_soon(partial(ingest_loop, proxy.state_dir, interval=0.5))
    mail = mails.iso2022jp()

    res = await smtplib_session(proxy.port(), [mail])
    acked = time.monotonic()
    assert res.transactions[0].data[0] == 250, res

    archive = await trio.to_thread.run_sync(Archive, proxy.state_dir)
    try:
        hits = await _search_until_found(archive, "請求書", limit=30)
        elapsed = time.monotonic() - acked
        print(f"searchable {elapsed:.3f} s after the 250")
        subject_hits = await trio.to_thread.run_sync(archive.search, "subject:請求書")
        assert [h.id for h in subject_hits] == [h.id for h in hits]
        assert len(hits) == 1 and "請求書" in hits[0].subject
        raw = await trio.to_thread.run_sync(archive.get_raw, hits[0].id)
        assert raw == mail.data == up.messages[0].content
        assert hashlib.sha256(raw).hexdigest() == proxy.reports()[0]["sha256"]
    finally:
        await trio.to_thread.run_sync(archive.close)
