"""Pure parts of pull archiving: multidrop owners, journal unwrap, receive-only SMTP core."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from archive.origin import folder_terms, origin_keys, query_key
from archive.pull import journal, multidrop
from proxy.smtp import receive as J


def test_multidrop_order_and_dedup() -> None:
    raw = (
        b"Received: from a by b with ESMTP id 1\r\n\tfor <Rcv@Corp.example>; Thu, 1 Jan 2026\r\n"
        b"To: Team <team@corp.example>, rcv@corp.example\r\n"
        b"Cc: =?utf-8?b?5bGx55Sw?= <yamada@corp.example>\r\n"
        b"X-Envelope-To: xe@corp.example\r\nEnvelope-To: env@corp.example\r\n"
        b"X-Original-To: orig@corp.example\r\nDelivered-To: dt@corp.example\r\n"
        b"\r\nDelivered-To: body@not.header\r\n"
    )
    assert multidrop.recipients(raw) == [
        "dt@corp.example", "orig@corp.example", "env@corp.example", "xe@corp.example",
        "rcv@corp.example", "team@corp.example", "yamada@corp.example",
    ]  # fmt: skip


def _report(envelope: bytes, original: bytes, cte: str = "7bit") -> bytes:
    body = base64.encodebytes(original) if cte == "base64" else original
    return (
        b"X-MS-Journal-Report:\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
        b"preamble\r\n--b1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: "
        b"quoted-printable\r\n\r\n" + envelope + b"\r\n--b1\r\nContent-Type: message/rfc822\r\n"
        b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body + b"\r\n--b1--\r\n"
    )


ORIG = b"From: a@x.example\r\nSubject: s\r\n\r\nline\r\n--not-the-boundary\r\n"


def test_unwrap_exchange_report_exact_bytes_and_recipients() -> None:
    env = (
        b"Sender: a@x.example\r\nMessage-Id: <m@x>\r\nRecipient: r1@x.example\r\n"
        b"To: m1@x.example, Expanded: dl@x.example\r\nBcc: =\r\nhidden@x.example\r\n"
        b"Cc: c@x.example, Forwarded: f@x.example\r\n"
    )
    for cte in ("7bit", "base64"):
        u = journal.unwrap(_report(env, ORIG, cte))
        assert u is not None and u.original == ORIG
        assert u.sender == "a@x.example" and u.message_id == "<m@x>"
        assert u.recipients == [
            "r1@x.example", "m1@x.example", "dl@x.example", "hidden@x.example",
            "c@x.example", "f@x.example",
        ]  # fmt: skip


def test_not_a_report_is_archived_as_received() -> None:
    assert journal.unwrap(ORIG) is None
    no_header = _report(b"To: a@x.example\r\n", ORIG).replace(b"X-MS-Journal-Report:", b"X: y")
    assert journal.unwrap(no_header) is None
    no_rcpts = _report(b"Subject: nothing\r\n", ORIG)
    assert journal.unwrap(no_rcpts) is None


def test_origin_keys() -> None:
    assert folder_terms("Archive/2024/Q1") == ["archive", "archive/2024", "archive/2024/q1"]
    keys = origin_keys("Box", "受信箱/請求書", "alice")
    assert keys == {"mailbox:box", "folder:受信箱", "folder:受信箱/請求書", "user:alice"}
    assert query_key("folder", "/Archive/") == "folder:archive"


def _session(**kw: object) -> J.JournalReceiver:
    core = J.JournalReceiver(J.ReceiveSettings(hostname="h", **kw))  # type: ignore[arg-type]
    core.start()
    core.actions()
    return core


def _sent(core: J.JournalReceiver) -> bytes:
    return b"".join(a.data for a in core.actions() if isinstance(a, J.Send))


def test_receive_core_accepts_only_after_commit() -> None:
    core = _session()
    core.receive(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    acts = core.actions()
    assert isinstance(acts[-1], J.BeginMessage) and acts[-1].envelope["rcpt_to"] == ["b@y"]
    core.receive(b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n")
    acts = core.actions()
    assert [type(a) for a in acts] == [J.MessageData, J.EndMessage]
    assert acts[0].data == b"Subject: x\r\n\r\n.dot\r\n"
    assert not core.reading  # nothing is answered before the copy is durable
    core.commit_result(False)
    # the 451 comes first, then the 221 of the QUIT sent behind the dot
    assert _sent(core) == (
        b"451 4.3.0 Message not accepted: archive unavailable, try again later\r\n221 2.0.0 Bye\r\n"
    )
    core2 = _session()
    core2.receive(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nx\r\n.\r\n")
    core2.actions()
    core2.commit_result(True)
    assert _sent(core2) == b"250 2.0.0 Ok: archived\r\n"


def test_receive_core_refuses_bare_lf_and_plaintext_after_starttls() -> None:
    core = _session()
    core.receive(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    core.actions()
    core.receive(b"a\n.\nMAIL FROM:<evil@x>\r\n.\r\n")
    acts = core.actions()
    assert any(isinstance(a, J.AbortMessage) for a in acts)
    assert b"550 5.5.2" in b"".join(a.data for a in acts if isinstance(a, J.Send))
    tls = _session(client_tls="starttls")
    tls.receive(b"EHLO c\r\n")
    assert b"STARTTLS" in _sent(tls)
    tls.receive(b"STARTTLS\r\nMAIL FROM:<a@x>\r\n")
    assert [type(a) for a in tls.actions()] == [J.Close]


def test_receive_core_auth_required() -> None:
    core = _session(require_auth=True)
    core.receive(b"EHLO c\r\nMAIL FROM:<a@x>\r\n")
    assert b"AUTH PLAIN LOGIN" in (out := _sent(core)) and b"530 5.7.0" in out
    core.receive(b"AUTH PLAIN " + base64.b64encode(b"\0u\0pw") + b"\r\n")
    (check,) = core.actions()
    assert isinstance(check, J.CheckLogin) and check.user == "u" and "pw" not in repr(check)
    core.login_result(True)
    core.receive(b"MAIL FROM:<a@x>\r\n")
    assert _sent(core) == b"235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n"


def _drive(chunks: list[bytes]) -> list[object]:
    core = J.JournalReceiver(J.ReceiveSettings(hostname="h", max_line_length=512))
    core.start()
    out: list[object] = list(core.actions())
    for chunk in chunks:
        core.receive(chunk)
        while actions := core.actions():  # as the driver does: answers cause more actions
            for a in actions:
                out.append(a)
                if isinstance(a, J.EndMessage):
                    core.commit_result(True)
    return _merge(out)


def _merge(actions: list[object]) -> list[object]:
    """Adjacent MessageData/Send are one stream (chunking may split them differently)."""
    merged: list[object] = []
    for a in actions:
        if merged and type(a) is type(merged[-1]) and isinstance(a, J.MessageData | J.Send):
            merged[-1] = type(a)(merged[-1].data + a.data)  # type: ignore[attr-defined]
        else:
            merged.append(a)
    return merged


SESSION = (
    b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: s\r\n\r\n..a\r\n"
    b".\r\nRSET\r\nMAIL FROM:<a@x>\r\nRCPT TO:<c@y>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n"
)


@given(st.lists(st.integers(min_value=1, max_value=len(SESSION)), max_size=12))
def test_receive_core_same_result_whatever_the_chunking(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [
        SESSION[i:j] for i, j in zip([0, *points], [*points, len(SESSION)], strict=True) if j > i
    ]
    assert _drive(chunks) == _drive([SESSION])


@given(st.binary(max_size=600))
def test_receive_core_any_input_gives_replies_not_exceptions(data: bytes) -> None:
    whole = _drive([b"EHLO c\r\n" + data])
    assert whole == _drive([b"EHLO c\r\n"] + [data[i : i + 1] for i in range(len(data))])


def test_an_older_catalog_gets_the_pull_columns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from archive.catalog import Catalog

    cat = Catalog(tmp_path / "catalog.sqlite")
    for col in ("mailbox", "folder", "archive_user"):
        cat.conn.execute(f"ALTER TABLE reports DROP COLUMN {col}")
    cat.conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    cat.close()
    cat = Catalog(tmp_path / "catalog.sqlite")
    cols = {r[1] for r in cat.conn.execute("PRAGMA table_info(reports)")}
    assert {"mailbox", "folder", "archive_user"} <= cols
    cat.close()
