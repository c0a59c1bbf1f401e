"""session.coalesce: fewer writes, never a send moved past the commit of a message."""

from __future__ import annotations

from archive.report_sections import MessageStart
from proxy import actions as A
from proxy.session import coalesce

BEGIN = A.BeginMessage(MessageStart("incoming"))


def test_a_retr_status_line_and_its_first_body_bytes_are_one_write() -> None:
    batch = [A.SendClient(b"+OK\r\n"), BEGIN, A.SendClient(b"body\r\n"), A.MessageData(b"body\r\n")]
    assert coalesce(batch) == [A.SendClient(b"+OK\r\nbody\r\n"), BEGIN, A.MessageData(b"body\r\n")]


def test_nothing_is_merged_across_a_commit() -> None:
    batch = [
        A.SendClient(b"last line\r\n"),
        A.MessageData(b"last line\r\n"),
        A.CommitMessage("delivered", None),
        A.SendClient(b".\r\n"),
    ]
    assert coalesce(batch) == batch


def test_sends_to_the_provider_merge_only_when_adjacent() -> None:
    batch = [A.SendUpstream(b"DATA\r\n"), BEGIN, A.SendUpstream(b"x\r\n"), A.SendUpstream(b"y")]
    assert coalesce(batch) == [A.SendUpstream(b"DATA\r\n"), BEGIN, A.SendUpstream(b"x\r\ny")]


def test_other_actions_end_a_run_of_client_sends() -> None:
    log = A.LogEvent("info", "x")
    batch = [A.SendClient(b"a"), log, A.SendClient(b"b"), A.SendClient(b"c")]
    assert coalesce(batch) == [A.SendClient(b"a"), log, A.SendClient(b"bc")]
