"""CoreCommon: the bookkeeping both relay cores share (proxy/core_common.py)."""

from __future__ import annotations

from proxy.actions import Close, LogEvent, SendClient
from proxy.core_common import CoreCommon
from proxy.pop3 import Pop3Relay
from proxy.settings import RelaySettings
from proxy.smtp.relay import SmtpRelay


def test_queue_close_once_and_count() -> None:
    common = CoreCommon(RelaySettings(max_commands=2))
    common.emit(SendClient(b"x"))
    assert common.close() and not common.close() and common.closed
    assert common.take() == [SendClient(b"x"), Close()] and common.take() == []
    assert [common.count_command() for _ in range(3)] == [True, True, False]


def test_archive_failure_policy() -> None:
    reject = CoreCommon(RelaySettings(), scrub=lambda m: m.replace("pw", "***"))
    assert reject.archive_failed("relayed pw", "refused pw") is False
    assert reject.take() == [LogEvent("error", "refused ***")]  # the scrubber applies
    passing = CoreCommon(RelaySettings(on_archive_failure="pass"))
    assert passing.archive_failed("relayed", "refused") is True
    assert passing.take() == [LogEvent("error", "relayed")]


def test_both_cores_hold_one_and_name_their_settings_alike() -> None:
    settings = RelaySettings(max_commands=7)
    for core in (SmtpRelay(settings), Pop3Relay(settings)):
        assert isinstance(core._common, CoreCommon) and core.settings is settings
