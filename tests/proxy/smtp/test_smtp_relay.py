"""SmtpRelay driven with byte strings: sessions, archive-before-acknowledge, refusals."""

from __future__ import annotations

import base64

import pytest
from smtp_harness import (
    BYE,
    EHLO_REPLY,
    GO_AHEAD,
    GREETING,
    OK,
    QUEUED,
    Driver,
    chunked,
    drive,
    kinds,
    log_text,
    make_relay,
    message_data,
    of_type,
    reports,
    to_client,
    to_upstream,
)

from proxy.actions import (
    AbortMessage,
    BeginMessage,
    Close,
    CloseUpstream,
    CommitMessage,
    LogEvent,
    LogTransaction,
    MessageData,
    RecordOutcome,
    SendClient,
    SendUpstream,
    Side,
    StartTls,
)
from proxy.errors import LocalProtocolError
from proxy.smtp.relay import SmtpRelay

MESSAGE = (
    b"From: a@example.org\r\nTo: b@example.org\r\nSubject: caf\xc3\xa9\r\n\r\n"
    b".starts with a dot\r\n..two dots\r\n.\r\n\r\nend\r\n"
)
STUFFED = (
    b"From: a@example.org\r\nTo: b@example.org\r\nSubject: caf\xc3\xa9\r\n\r\n"
    b"..starts with a dot\r\n...two dots\r\n..\r\n\r\nend\r\n"
)
ENVELOPE = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\n"
RCPT_OK = b"250 2.1.5 Ok\r\n"
PASSWORD = "s3cr3t-Pa55"
B64_PASSWORD = base64.b64encode(PASSWORD.encode()).decode()


def full_session(**settings: object) -> tuple[Driver, list]:
    driver = Driver(make_relay(**settings))
    actions = driver.run(
        [b"EHLO pc1\r\n", ENVELOPE + b"DATA\r\n", STUFFED + b".\r\n", b"QUIT\r\n"],
        [GREETING, EHLO_REPLY, OK + RCPT_OK + RCPT_OK + GO_AHEAD, QUEUED, BYE],
    )
    return driver, actions


# --- ordinary sessions ---------------------------------------------------------------
def test_pipelined_transaction_relayed_and_archived() -> None:
    driver, actions = full_session()
    assert to_upstream(actions) == (
        b"EHLO pc1\r\n" + ENVELOPE + b"DATA\r\n" + STUFFED + b".\r\nQUIT\r\n"
    )
    client = to_client(actions)
    assert client.startswith(GREETING + b"250-smtp.example.net\r\n")
    assert client.endswith(OK + RCPT_OK + RCPT_OK + GO_AHEAD + QUEUED + BYE)
    assert message_data(actions) == MESSAGE
    assert reports(actions) == [
        {
            "direction": "outgoing",
            "smtp": {
                "helo": "pc1",
                "mail_from": "a@example.org",
                "rcpt_to": ["b@example.org", "c@example.org"],
                "auth_user": None,
            },
        }
    ]
    assert of_type(actions, RecordOutcome) == [
        RecordOutcome("delivered", "250 2.0.0 Ok: queued as 4F1")
    ]
    (log,) = of_type(actions, LogTransaction)
    assert log.fields == {
        "protocol": "smtp",
        "from": "a@example.org",
        "rcpts": 2,
        "size": len(MESSAGE),
        "outcome": "delivered",
        "reply": 250,
    }
    assert isinstance(actions[-1], Close) and driver.relay.reading is None
    assert driver.commits == 1


def test_order_begin_data_commit_dot_outcome() -> None:
    _, actions = full_session()
    k = kinds(actions)
    begin = k.index("BeginMessage")
    commit = k.index("CommitMessage")
    assert "MessageData" in k[begin:commit]
    dot = next(i for i, a in enumerate(actions) if a == SendUpstream(b".\r\n"))
    assert actions.index(CommitMessage()) < dot
    assert dot < actions.index(RecordOutcome("delivered", "250 2.0.0 Ok: queued as 4F1"))
    assert not of_type(actions, AbortMessage)


def test_final_dot_held_until_archive_result() -> None:
    relay = make_relay()
    relay.receive_upstream(GREETING)
    relay.receive_client(b"EHLO pc\r\n")
    relay.receive_upstream(EHLO_REPLY)
    relay.receive_client(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    relay.receive_upstream(OK + OK + GO_AHEAD)
    relay.actions()
    relay.receive_client(b"hello\r\n.\r\nNOOP\r\n")
    acts = relay.actions()
    assert acts[-1] == CommitMessage()
    assert to_upstream(acts) == b"hello\r\n"  # not the final ".\r\n", not the NOOP
    assert relay.reading is Side.UPSTREAM  # the core reads nothing until the answer
    relay.archive_result(True)
    acts = relay.actions()
    assert to_upstream(acts) == b".\r\n" and not to_client(acts)
    relay.receive_upstream(QUEUED)
    acts = relay.actions()
    assert to_client(acts) == QUEUED
    assert to_upstream(acts) == b"NOOP\r\n"  # the pipelined command after the reply


def test_two_transactions_and_rset() -> None:
    client = [
        b"EHLO pc\r\n",
        b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n",
        b"first\r\n.\r\n",
        b"RSET\r\n",
        b"MAIL FROM:<c@x>\r\nRCPT TO:<d@y>\r\nDATA\r\n",
        b"..second\r\n.\r\nQUIT\r\n",
    ]
    upstream = [GREETING, EHLO_REPLY, OK + OK + GO_AHEAD, QUEUED, OK, OK + OK + GO_AHEAD]
    upstream += [b"250 2.0.0 Ok: queued as 5A2\r\n", BYE]
    driver = Driver(make_relay())
    actions = driver.run(client, upstream)
    assert driver.commits == 2
    assert [r["smtp"]["mail_from"] for r in reports(actions)] == ["a@x", "c@x"]  # type: ignore[index]
    assert [r["smtp"]["rcpt_to"] for r in reports(actions)] == [["b@y"], ["d@y"]]  # type: ignore[index]
    assert message_data(actions) == b"first\r\n.second\r\n"
    assert [o.reply for o in of_type(actions, RecordOutcome)] == [  # type: ignore[attr-defined]
        "250 2.0.0 Ok: queued as 4F1",
        "250 2.0.0 Ok: queued as 5A2",
    ]
    assert b"RSET\r\n" in to_upstream(actions)
    assert to_upstream(actions).endswith(b"..second\r\n.\r\nQUIT\r\n")
    assert isinstance(actions[-1], Close)


def test_rset_clears_the_envelope() -> None:
    client = [b"EHLO pc\r\n", b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRSET\r\n"]
    client += [b"MAIL FROM:<c@x>\r\nRCPT TO:<d@y>\r\nDATA\r\n", b"x\r\n.\r\n"]
    actions = drive(client, [GREETING, EHLO_REPLY, OK * 3, OK + OK + GO_AHEAD, QUEUED])
    (report,) = reports(actions)
    assert report["smtp"]["rcpt_to"] == ["d@y"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"NOOP\r\n", b"250 2.0.0 Ok\r\n"),
        (b"VRFY root\r\n", b"252 2.0.0 root\r\n"),
        (b"HELP\r\n", b"214-2.0.0 Commands:\r\n214 2.0.0 HELO EHLO MAIL\r\n"),
        (b"EXPN staff\r\n", b"502 5.5.2 Error: command not recognized\r\n"),
        (b"XUNKNOWN x\r\n", b"502 5.5.2 Error: command not recognized\r\n"),
        (b"noop\r\n", b"250 2.0.0 Ok\r\n"),
        (b"\r\n", b"500 5.5.2 Error: bad syntax\r\n"),
    ],
)
def test_other_commands_relayed_verbatim(command: bytes, reply: bytes) -> None:
    actions = drive([b"EHLO pc\r\n", command], [GREETING, EHLO_REPLY, reply])
    assert to_upstream(actions) == b"EHLO pc\r\n" + command
    assert to_client(actions).endswith(reply)
    assert not of_type(actions, Close)


def test_quit_closes_after_the_reply() -> None:
    driver = Driver(make_relay())
    actions = driver.run([b"QUIT\r\n", b"NOOP\r\n"], [GREETING, BYE])
    assert to_client(actions) == GREETING + BYE
    assert to_upstream(actions) == b"QUIT\r\n"
    assert actions[-1] == Close() and driver.relay.reading is None


def test_greeting_relayed_before_anything_is_read() -> None:
    relay = make_relay()
    assert relay.reading is Side.UPSTREAM
    relay.receive_upstream(b"220-mx.example ESMTP\r\n")
    assert relay.actions() == [] and relay.reading is Side.UPSTREAM
    relay.receive_upstream(b"220 welcome\r\n")
    assert relay.actions() == [SendClient(b"220-mx.example ESMTP\r\n220 welcome\r\n")]
    assert relay.reading is Side.CLIENT


def test_ehlo_pipelined_after_mail_waits_for_its_reply() -> None:
    client = [b"EHLO a\r\n", b"MAIL FROM:<a@x>\r\nEHLO b\r\nNOOP\r\n"]
    driver = Driver(make_relay())
    driver.run(client, [GREETING, EHLO_REPLY])
    assert to_upstream(driver.log) == b"EHLO a\r\nMAIL FROM:<a@x>\r\n"  # EHLO b not yet
    driver.run([], [OK, EHLO_REPLY, OK])
    assert to_upstream(driver.log) == b"EHLO a\r\nMAIL FROM:<a@x>\r\nEHLO b\r\nNOOP\r\n"
    client = to_client(driver.log)
    ehlo = client[len(GREETING) : client.index(OK)]  # the rewritten EHLO reply
    assert client == GREETING + ehlo + OK + ehlo + OK  # in command order


def test_helo_relayed_and_answered_single_line() -> None:
    actions = drive([b"HELO pc\r\n"], [GREETING, b"250 smtp.example.net\r\n"])
    assert to_upstream(actions) == b"HELO pc\r\n"
    assert to_client(actions) == GREETING + b"250 smtp.example.net\r\n"


def test_ehlo_refused_passes_unchanged() -> None:
    refusal = b"550 5.7.1 go away\r\n"
    actions = drive([b"EHLO pc\r\n"], [GREETING, refusal], client_tls="starttls")
    assert to_client(actions) == GREETING + refusal


def test_data_refused_starts_no_message() -> None:
    client = [b"EHLO pc\r\n", b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n", b"NOOP\r\n"]
    nodata = b"554 5.5.1 Error: no valid recipients\r\n"
    actions = drive(client, [GREETING, EHLO_REPLY, OK + b"550 5.1.1 no\r\n" + nodata, OK])
    assert not of_type(actions, BeginMessage)
    assert to_client(actions).endswith(OK + b"550 5.1.1 no\r\n" + nodata + OK)
    assert to_upstream(actions).endswith(b"DATA\r\nNOOP\r\n")


def test_unsolicited_upstream_reply_is_passed_on() -> None:
    relay = make_relay()
    relay.receive_upstream(GREETING)
    relay.actions()
    relay.receive_upstream(b"421 4.3.2 shutting down\r\n")
    assert relay.actions() == [SendClient(b"421 4.3.2 shutting down\r\n")]


# --- upstream verdicts ----------------------------------------------------------------
def test_upstream_rejections_relayed_verbatim() -> None:
    rcpt_no = b"550-5.1.1 <c@example.org>: Recipient address rejected:\r\n550 5.1.1 unknown\r\n"
    final_no = b"550 5.7.1 Message content rejected: spam\r\n"
    actions = drive(
        [b"EHLO pc1\r\n", ENVELOPE + b"DATA\r\n", STUFFED + b".\r\n"],
        [GREETING, EHLO_REPLY, OK + RCPT_OK + rcpt_no + GO_AHEAD, final_no],
    )
    assert to_client(actions).endswith(OK + RCPT_OK + rcpt_no + GO_AHEAD + final_no)
    (report,) = reports(actions)
    assert report["smtp"]["rcpt_to"] == ["b@example.org"]  # type: ignore[index]
    assert of_type(actions, RecordOutcome) == [
        RecordOutcome("rejected", "550 5.7.1 Message content rejected: spam")
    ]
    (log,) = of_type(actions, LogTransaction)
    assert log.fields["outcome"] == "rejected" and log.fields["reply"] == 550  # type: ignore[attr-defined]
    assert not of_type(actions, Close)


def test_mail_refused_leaves_no_sender() -> None:
    client = [b"EHLO pc\r\n", b"MAIL FROM:<a@x>\r\nMAIL FROM:<z@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"]
    replies = [GREETING, EHLO_REPLY, b"553 no\r\n" + OK + OK + GO_AHEAD]
    actions = drive([*client, b"x\r\n.\r\n"], [*replies, QUEUED])
    assert reports(actions)[0]["smtp"]["mail_from"] == "z@x"  # type: ignore[index]


# --- archive failures -------------------------------------------------------------------
def test_archive_failure_reject_mode_never_sends_the_dot() -> None:
    driver = Driver(make_relay(), archive_ok=False)
    actions = driver.run(
        [b"EHLO pc1\r\n", ENVELOPE + b"DATA\r\n", STUFFED + b".\r\n", b"QUIT\r\n"],
        [GREETING, EHLO_REPLY, OK + RCPT_OK + RCPT_OK + GO_AHEAD, QUEUED, BYE],
    )
    upstream = to_upstream(actions)
    assert upstream.endswith(STUFFED) and b"\r\n.\r\n" not in upstream[-len(STUFFED) - 5 :]
    assert SendUpstream(b".\r\n") not in actions
    commit = actions.index(CommitMessage())
    tail = kinds(actions[commit:])
    assert tail[:2] == ["CommitMessage", "LogEvent"]
    assert tail[2:] == ["CloseUpstream", "LogTransaction", "SendClient", "Close"]
    assert actions[-2] == SendClient(
        b"451 4.3.0 Message not accepted: archive unavailable, try again later\r\n"
    )
    errors = [a for a in of_type(actions, LogEvent) if a.level == "error"]  # type: ignore[attr-defined]
    assert "No space left on device" in errors[0].message  # type: ignore[attr-defined]
    assert not of_type(actions, RecordOutcome)


def test_archive_failure_pass_mode_relays_anyway_and_alerts() -> None:
    driver = Driver(make_relay(on_archive_failure="pass"), archive_ok=False)
    actions = driver.run(
        [b"EHLO pc1\r\n", ENVELOPE + b"DATA\r\n", STUFFED + b".\r\n", b"QUIT\r\n"],
        [GREETING, EHLO_REPLY, OK + RCPT_OK + RCPT_OK + GO_AHEAD, QUEUED, BYE],
    )
    assert to_upstream(actions).endswith(STUFFED + b".\r\nQUIT\r\n")
    assert to_client(actions).endswith(QUEUED + BYE)
    assert any(
        a.level == "error" and "on_archive_failure=pass" in a.message  # type: ignore[attr-defined]
        for a in of_type(actions, LogEvent)
    )
    assert not of_type(actions, CloseUpstream)


def test_archive_result_without_commit_is_a_local_error() -> None:
    relay = make_relay()
    with pytest.raises(LocalProtocolError):
        relay.archive_result(True)


# --- smuggling and size -----------------------------------------------------------------
SMUGGLED_TAIL = (
    b"MAIL FROM:<admin@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
    b"smuggled\r\n.\r\nQUIT\r\n"
)
FAKE_ENDS = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n", b"\r\n.\n"]


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
@pytest.mark.parametrize("split", ["whole", "bytewise", "at-bare"])
def test_smuggling_refused(fake_end: bytes, split: str) -> None:
    stream = b"From: a@example.org\r\n\r\nhello" + fake_end + SMUGGLED_TAIL
    if split == "whole":
        chunks = [stream]
    elif split == "bytewise":
        chunks = chunked(stream, range(len(stream)))
    else:
        chunks = chunked(stream, [stream.index(fake_end) + 1])
    driver = Driver(make_relay())
    actions = driver.run(
        [b"EHLO pc\r\n", b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n", *chunks],
        [GREETING, EHLO_REPLY, OK + OK + GO_AHEAD],
    )
    upstream = to_upstream(actions)
    assert b"admin@bank" not in upstream and b"smuggled" not in upstream
    assert fake_end not in upstream
    assert SendUpstream(b".\r\n") not in actions
    begin = actions.index(next(a for a in actions if isinstance(a, BeginMessage)))
    k = [x for x in kinds(actions[begin:]) if x not in ("SendUpstream", "MessageData")]
    assert k == [
        "BeginMessage",
        "AbortMessage",
        "CloseUpstream",
        "LogEvent",
        "LogTransaction",
        "SendClient",
        "Close",
    ]
    assert actions[-2] in (
        SendClient(b"550 5.5.2 Error: bare <LF> received\r\n"),
        SendClient(b"550 5.5.2 Error: bare <CR> received\r\n"),
    )
    assert driver.commits == 0
    assert b"QUIT" not in upstream  # the session ended; nothing after is relayed


def test_bare_cr_refused() -> None:
    actions = drive(
        [b"EHLO pc\r\n", b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n", b"a\r.\rb\r\n.\r\n"],
        [GREETING, EHLO_REPLY, OK + OK + GO_AHEAD],
    )
    assert actions[-2] == SendClient(b"550 5.5.2 Error: bare <CR> received\r\n")
    assert SendUpstream(b".\r\n") not in actions and not of_type(actions, CommitMessage)


def test_message_over_max_size_refused() -> None:
    body = b"x" * 70 + b"\r\n"
    driver = Driver(make_relay(max_message_size=1000))
    chunks = [body * 5, body * 5, body * 5, b".\r\n"]
    actions = driver.run(
        [b"EHLO pc\r\n", b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n", *chunks],
        [GREETING, EHLO_REPLY, OK + OK + GO_AHEAD],
    )
    assert actions[-2] == SendClient(
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    )
    assert isinstance(actions[-1], Close)
    assert of_type(actions, AbortMessage) and of_type(actions, CloseUpstream)
    assert SendUpstream(b".\r\n") not in actions and driver.commits == 0
    assert len(message_data(actions)) <= 1000


def test_ehlo_size_is_capped_to_max_message_size() -> None:
    actions = drive([b"EHLO pc\r\n"], [GREETING, EHLO_REPLY], max_message_size=1000)
    assert b"250-SIZE 1000\r\n" in to_client(actions)


def test_mail_size_over_limit_refused_locally_in_order() -> None:
    client = [
        b"EHLO pc\r\n",
        b"RSET\r\nMAIL FROM:<a@x> SIZE=5000 BODY=8BITMIME\r\nNOOP\r\nMAIL FROM:<b@x> SIZE=10\r\n",
    ]
    replies = [GREETING, EHLO_REPLY, b"250 2.0.0 rset\r\n" + b"250 2.0.0 noop\r\n" + OK]
    actions = drive(client, replies, max_message_size=1000)
    assert to_upstream(actions) == (
        b"EHLO pc\r\nRSET\r\nNOOP\r\nMAIL FROM:<b@x> SIZE=10\r\n"  # the big MAIL not relayed
    )
    assert to_client(actions).endswith(
        b"250 2.0.0 rset\r\n"
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        b"250 2.0.0 noop\r\n" + OK
    )


def test_mail_size_over_limit_first_in_pipeline() -> None:
    client = [b"EHLO pc\r\n", b"MAIL FROM:<a@x> size=5000\r\nRCPT TO:<b@y>\r\n"]
    actions = drive(client, [GREETING, EHLO_REPLY, b"503 5.5.1 need MAIL\r\n"], max_message_size=10)
    assert to_client(actions).endswith(
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n503 5.5.1 need MAIL\r\n"
    )


def test_bdat_refused_not_relayed() -> None:
    actions = drive([b"EHLO pc\r\n", b"BDAT 10 LAST\r\n"], [GREETING, EHLO_REPLY])
    assert to_upstream(actions) == b"EHLO pc\r\n"
    assert to_client(actions).endswith(b"502 5.5.1 BDAT not supported\r\n")
    assert b"CHUNKING" not in to_client(actions)


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"BURL imap://u@h/INBOX/;uid=1/;urlauth=x LAST\r\n", b"502 5.5.1 BURL not supported"),
        (b"XCLIENT ADDR=192.0.2.1\r\n", b"550 5.7.0 XCLIENT/XFORWARD not permitted"),
        (b"xforward NAME=spoof\r\n", b"550 5.7.0 XCLIENT/XFORWARD not permitted"),
    ],
)
def test_burl_xclient_xforward_refused_not_relayed(command: bytes, reply: bytes) -> None:
    ehlo = (
        b"250-up\r\n250-BURL imap\r\n250-XCLIENT NAME ADDR\r\n250-XFORWARD NAME\r\n250 8BITMIME\r\n"
    )
    actions = drive([b"EHLO pc\r\n", command], [GREETING, ehlo])
    assert to_upstream(actions) == b"EHLO pc\r\n"
    assert to_client(actions).endswith(reply + b"\r\n")
    shown_ehlo = to_client(actions)[: -len(reply) - 2]
    assert shown_ehlo.endswith(b"250-up\r\n250 8BITMIME\r\n")
    for keyword in (b"BURL", b"XCLIENT", b"XFORWARD"):
        assert keyword not in shown_ehlo


# --- command hygiene -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "command", [b"DATA\x00\r\n", b"DATA\x00x\r\n", b"RCPT TO:<a\x01@x>\r\n", b"DATA\x7f\r\n"]
)
def test_control_bytes_in_command_refused_not_relayed(command: bytes) -> None:
    actions = drive([b"EHLO pc\r\n", command + b"NOOP\t\r\n"], [GREETING, EHLO_REPLY, OK])
    assert to_upstream(actions) == b"EHLO pc\r\nNOOP\t\r\n"  # TAB is allowed
    assert to_client(actions).endswith(b"500 5.5.2 Error: control characters in command\r\n" + OK)


def test_354_to_anything_but_data_closes_the_provider_first() -> None:
    """An unknown verb is a barrier: nothing after it is relayed before its reply, and a
    354 to it closes the provider connection before anything more is relayed."""
    client = [b"EHLO pc\r\n", b"MAIL FROM:<a@x>\r\n", b"XDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n"]
    replies = [GREETING, EHLO_REPLY, OK, b"354 go ahead\r\n"]
    actions = drive(client, replies)
    assert to_upstream(actions).endswith(b"MAIL FROM:<a@x>\r\nXDATA\r\n")
    assert CloseUpstream() in actions
    assert b"354" not in to_client(actions)
    assert to_client(actions).endswith(
        b"421 4.4.0 mailtee.localdomain Provider sent an invalid reply, closing\r\n"
    )
    assert actions[-1] == Close()


@pytest.mark.parametrize(
    "command",
    [b"MAIL FROM:<a@x>\rRCPT TO:<v@y>\r\n", b"NOOP\n", b"RCPT TO:<a\r@x>\r\n", b"NOOP\r\r\n"],
)
def test_bare_cr_or_lf_in_command_refused_not_relayed(command: bytes) -> None:
    actions = drive([b"EHLO pc\r\n", command + b"NOOP\r\n"], [GREETING, EHLO_REPLY, OK])
    assert to_upstream(actions) == b"EHLO pc\r\nNOOP\r\n"
    assert to_client(actions).endswith(b"500 5.5.2 Error: bare <CR> or <LF> in command\r\n" + OK)


def test_line_too_long_refused_then_resync() -> None:
    long_line = b"NOOP " + b"x" * 3000 + b"\r\n"
    actions = drive([b"EHLO pc\r\n", long_line + b"NOOP\r\n"], [GREETING, EHLO_REPLY, OK])
    assert to_upstream(actions) == b"EHLO pc\r\nNOOP\r\n"
    assert to_client(actions).endswith(b"500 5.5.2 Line too long\r\n" + OK)


def test_too_many_commands() -> None:
    driver = Driver(make_relay(max_commands=3))
    actions = driver.run([b"NOOP\r\nNOOP\r\nNOOP\r\n", b"NOOP\r\n"], [GREETING, OK * 3])
    assert to_upstream(actions) == b"NOOP\r\n" * 3
    assert actions[-2] == SendClient(
        b"421 4.7.0 mailtee.localdomain Too many commands, closing\r\n"
    )
    assert actions[-1] == Close()


def test_overlong_lines_count_as_commands() -> None:
    driver = Driver(make_relay(max_commands=3, max_line_length=64))
    actions = driver.run([b"x" * 100 + b"\r\n"] * 5, [GREETING])
    assert to_client(actions).count(b"500 5.5.2 Line too long") == 3
    assert actions[-1] == Close() and b"Too many commands" in to_client(actions)


# --- STARTTLS --------------------------------------------------------------------------------
def test_client_starttls() -> None:
    driver = Driver(make_relay(client_tls="starttls"))
    actions = driver.run([b"EHLO pc\r\n"], [GREETING, EHLO_REPLY])
    ehlo = to_client(actions)[len(GREETING) :]
    assert ehlo.endswith(b"250 STARTTLS\r\n") and b"AUTH" not in ehlo
    driver.log.clear()
    actions = driver.run([b"STARTTLS\r\n"])
    assert actions == [SendClient(b"220 2.0.0 Ready to start TLS\r\n"), StartTls(Side.CLIENT)]
    driver.log.clear()
    actions = driver.run([b"EHLO pc\r\n", b"STARTTLS\r\n"], [EHLO_REPLY])
    ehlo = to_client(actions)
    assert b"250-AUTH PLAIN LOGIN\r\n" in ehlo and b"STARTTLS\r\n250" not in ehlo
    assert ehlo.endswith(b"503 5.5.1 TLS already active\r\n")
    assert b"STARTTLS" not in to_upstream(driver.log)


def test_client_starttls_with_pipelined_plaintext_dropped() -> None:
    driver = Driver(make_relay(client_tls="starttls"))
    actions = driver.run(
        [b"EHLO pc\r\n", b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n"], [GREETING, EHLO_REPLY]
    )
    assert not of_type(actions, StartTls)
    assert actions[-1] == Close()
    assert b"evil" not in to_upstream(actions)
    assert b"220 2.0.0" not in to_client(actions)[len(GREETING) :]


def test_starttls_not_offered_on_plain_listener() -> None:
    actions = drive([b"EHLO pc\r\n", b"STARTTLS\r\n"], [GREETING, EHLO_REPLY])
    assert b"STARTTLS" not in to_client(actions)[: -len(b"502 5.5.1 STARTTLS not available\r\n")]
    assert to_client(actions).endswith(b"502 5.5.1 STARTTLS not available\r\n")
    assert not of_type(actions, StartTls) and b"STARTTLS" not in to_upstream(actions)


def test_implicit_tls_listener_offers_auth_not_starttls() -> None:
    actions = drive([b"EHLO pc\r\n"], [GREETING, EHLO_REPLY], client_tls="implicit")
    assert b"AUTH PLAIN LOGIN" in to_client(actions) and b"STARTTLS" not in to_client(actions)


def test_auth_before_tls_refused_on_starttls_listener() -> None:
    actions = drive(
        [b"EHLO pc\r\n", b"AUTH PLAIN AGFAYg==\r\n"], [GREETING, EHLO_REPLY], client_tls="starttls"
    )
    assert to_client(actions).endswith(
        b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    )
    assert b"AUTH" not in to_upstream(actions)


def test_auth_before_tls_is_refused_in_every_spelling_and_lookalikes_are_unknown() -> None:
    for line in (b"auth plain AGFAYg==\r\n", b"AUTH\tLOGIN\r\n", b"AUTH\r\n"):
        actions = drive([line], [GREETING], client_tls="starttls")
        assert to_client(actions).endswith(
            b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
        )
        assert to_upstream(actions) == b"", line
    # Found by fuzz/smtp_core.py: "AUTHDATA" is no AUTH; it is relayed as an unknown verb.
    actions = drive([b"AUTHDATA\r\n"], [GREETING, b"502 5.5.2 unknown\r\n"], client_tls="starttls")
    assert to_upstream(actions) == b"AUTHDATA\r\n"
    assert to_client(actions).endswith(b"502 5.5.2 unknown\r\n")


def test_tls_forgets_the_envelope() -> None:
    driver = Driver(make_relay(client_tls="starttls"))
    driver.run(
        [b"EHLO a\r\n", b"MAIL FROM:<pre@x>\r\n", b"STARTTLS\r\n"], [GREETING, EHLO_REPLY, OK]
    )
    actions = driver.run(
        [b"EHLO b\r\n", b"RCPT TO:<b@y>\r\nDATA\r\n", b"x\r\n.\r\n"],
        [EHLO_REPLY, OK + GO_AHEAD, QUEUED],
    )
    (report,) = reports(actions)
    assert report["smtp"]["mail_from"] is None and report["smtp"]["helo"] == "b"  # type: ignore[index]


UPSTREAM_SETUP_EHLO = b"250-smtp.example.net\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n"


def test_target_starttls_before_the_greeting_reaches_the_client() -> None:
    relay = make_relay(target_tls="starttls", hostname="gw.example")
    relay.receive_upstream(GREETING)
    acts = relay.actions()
    assert acts == [SendUpstream(b"EHLO gw.example\r\n")]
    relay.receive_upstream(UPSTREAM_SETUP_EHLO)
    assert relay.actions() == [SendUpstream(b"STARTTLS\r\n")]
    relay.receive_upstream(b"220 2.0.0 Ready to start TLS\r\n")
    assert relay.actions() == [StartTls(Side.UPSTREAM)]
    relay.tls_started(Side.UPSTREAM, "TLSv1.3")
    assert relay.actions() == [SendClient(GREETING)]
    assert relay.reading is Side.CLIENT
    relay.receive_client(b"EHLO pc\r\n")
    assert relay.actions() == [SendUpstream(b"EHLO pc\r\n")]


def test_target_starttls_injection_after_220_refused() -> None:
    actions = drive(
        [],
        [GREETING, UPSTREAM_SETUP_EHLO, b"220 2.0.0 Ready\r\n250 injected\r\n"],
        target_tls="starttls",
    )
    assert not of_type(actions, StartTls)
    assert to_client(actions) == (
        b"421 4.7.0 mailtee.localdomain TLS with the provider failed, closing\r\n"
    )
    assert actions[-1] == Close()


@pytest.mark.parametrize(
    "replies",
    [
        [GREETING, b"250-mx\r\n250 PIPELINING\r\n"],
        [GREETING, UPSTREAM_SETUP_EHLO, b"454 4.7.0 TLS not available\r\n"],
        [GREETING, b"502 5.5.2 what\r\n"],
    ],
)
def test_target_starttls_unavailable_closes(replies: list[bytes]) -> None:
    actions = drive([], replies, target_tls="starttls")
    assert to_client(actions) == (
        b"421 4.7.0 mailtee.localdomain Provider does not offer STARTTLS, closing\r\n"
    )
    assert not of_type(actions, StartTls) and actions[-1] == Close()


@pytest.mark.parametrize("inject", [False, True])
def test_target_starttls_non_220_greeting_is_not_a_downgrade(inject: bool) -> None:
    # A provider (or a man in the middle) answering with a non-220 greeting must not get
    # the session in plaintext: with injected credentials that would send AUTH PLAIN.
    settings: dict[str, object] = {"target_tls": "starttls"}
    if inject:
        settings |= {"target_user": "bob", "target_password": PASSWORD}
    refusal = b"554 5.3.2 not now\r\n"
    driver = Driver(make_relay(**settings))
    actions = driver.run(
        [b"EHLO pc\r\n", b"AUTH PLAIN AGJvYgBwdw==\r\n"],
        [refusal, EHLO_REPLY, b"235 2.7.0 ok\r\n"],
    )
    assert to_upstream(actions) == b""
    assert to_client(actions) == refusal
    assert actions[-1] == Close() and driver.relay.reading is None


def test_target_tls_failed() -> None:
    relay = make_relay(target_tls="starttls")
    for reply in (GREETING, UPSTREAM_SETUP_EHLO, b"220 go\r\n"):
        relay.receive_upstream(reply)
    relay.actions()
    relay.tls_failed(Side.UPSTREAM, "certificate verify failed")
    acts = relay.actions()
    assert acts[-2:] == [
        SendClient(b"421 4.7.0 mailtee.localdomain TLS with the provider failed, closing\r\n"),
        Close(),
    ]


# --- AUTH ---------------------------------------------------------------------------------
def test_injected_credentials_plain() -> None:
    settings = {"target_user": "alice@example.net", "target_password": PASSWORD}
    driver = Driver(make_relay(**settings))
    driver.run([b"EHLO pc\r\n"], [GREETING, EHLO_REPLY])
    token = base64.b64encode(b"\0alice@example.net\0" + PASSWORD.encode())
    assert to_upstream(driver.log) == b"EHLO pc\r\nAUTH PLAIN " + token + b"\r\n"
    assert to_client(driver.log) == GREETING  # the EHLO answer waits for AUTH
    actions = driver.run(
        [
            b"AUTH PLAIN AGFAYg==\r\n",
            b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n",
            b"x\r\n.\r\n",
        ],
        [b"235 2.7.0 Authentication successful\r\n", OK + OK + GO_AHEAD, QUEUED],
    )
    client = to_client(actions)
    assert b"AUTH" not in client.split(b"\r\n503")[0]  # not advertised
    assert b"503 5.5.1 Already authenticated by the proxy\r\n" in client  # client AUTH refused
    assert b"AGFAYg==" not in to_upstream(actions)
    (report,) = reports(actions)
    # auth_user records the client's own login only, not the proxy's account
    assert report["smtp"]["auth_user"] is None  # type: ignore[index]
    assert PASSWORD not in log_text(actions) and token.decode() not in log_text(actions)
    assert PASSWORD not in repr(driver.relay.settings)


def test_injected_credentials_login_only() -> None:
    ehlo = b"250-smtp.example.net\r\n250-AUTH LOGIN\r\n250 8BITMIME\r\n"
    settings = {"target_user": "bob", "target_password": PASSWORD}
    actions = drive(
        [b"EHLO pc\r\n"],
        [GREETING, ehlo, b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n", b"235 2.7.0 ok\r\n"],
        **settings,
    )
    assert to_upstream(actions) == (
        b"EHLO pc\r\nAUTH LOGIN\r\nYm9i\r\n" + B64_PASSWORD.encode() + b"\r\n"
    )
    assert to_client(actions) == GREETING + b"250-smtp.example.net\r\n250 8BITMIME\r\n"
    assert PASSWORD not in log_text(actions)


@pytest.mark.parametrize(
    "replies",
    [
        [
            GREETING,
            EHLO_REPLY,
            b"535 5.7.8 Error: authentication failed: " + PASSWORD.encode() + b"\r\n",
        ],
        [GREETING, b"250-mx\r\n250 AUTH LOGIN\r\n", b"334 VXNlcm5hbWU6\r\n", b"535 5.7.8 no\r\n"],
        [GREETING, b"250-mx\r\n250 AUTH CRAM-MD5\r\n"],
        [GREETING, b"250-mx\r\n250 AUTH LOGIN\r\n", b"334 a\r\n", b"334 b\r\n", b"334 c\r\n"],
    ],
)
def test_injected_credentials_failure(replies: list[bytes]) -> None:
    actions = drive([b"EHLO pc\r\n"], replies, target_user="bob", target_password=PASSWORD)
    assert to_client(actions) == GREETING + (
        b"421 4.7.0 mailtee.localdomain Provider refused the configured credentials\r\n"
    )
    assert actions[-1] == Close()
    logs = [a.message for a in of_type(actions, LogEvent)]  # type: ignore[attr-defined]
    assert logs and all(B64_PASSWORD not in m for m in logs)
    if b"535 5.7.8 Error" not in replies[-1]:  # unless the provider itself echoes it
        assert PASSWORD not in log_text(actions)


def test_helo_with_injected_credentials() -> None:
    actions = drive(
        [b"HELO pc\r\n"],
        [GREETING, EHLO_REPLY, b"235 2.7.0 ok\r\n"],
        target_user="bob",
        target_password=PASSWORD,
    )
    assert to_upstream(actions).startswith(b"EHLO pc\r\nAUTH PLAIN ")
    assert to_client(actions) == GREETING + b"250 smtp.example.net\r\n"


def test_second_ehlo_after_injected_auth_does_not_reauthenticate() -> None:
    driver = Driver(make_relay(target_user="bob", target_password=PASSWORD))
    driver.run([b"EHLO pc\r\n"], [GREETING, EHLO_REPLY, b"235 2.7.0 ok\r\n"])
    first = to_client(driver.log)[len(GREETING) :]
    driver.log.clear()
    actions = driver.run(
        [b"EHLO again\r\n", b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"],
        [OK, OK + OK + GO_AHEAD],
    )
    assert to_upstream(actions).startswith(b"RSET\r\n")
    assert to_client(actions).startswith(first)
    assert reports(actions)[0]["smtp"]["helo"] == "again"  # type: ignore[index]


def test_client_auth_plain_relayed_and_user_recorded() -> None:
    token = base64.b64encode(b"\0carol\0" + PASSWORD.encode())
    actions = drive(
        [
            b"EHLO pc\r\n",
            b"AUTH PLAIN " + token + b"\r\n",
            b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n",
            b"x\r\n.\r\n",
        ],
        [GREETING, EHLO_REPLY, b"235 2.7.0 ok\r\n", OK + OK + GO_AHEAD, QUEUED],
    )
    assert b"AUTH PLAIN " + token + b"\r\n" in to_upstream(actions)
    assert b"250-AUTH PLAIN LOGIN\r\n" in to_client(actions)
    (report,) = reports(actions)
    assert report["smtp"]["auth_user"] == "carol"  # type: ignore[index]
    assert PASSWORD not in log_text(actions) and token.decode() not in log_text(actions)


@pytest.mark.parametrize("user_line", [b"Y2Fyb2w=\r\n", b"=\r\n", b"!!\r\n"])
def test_client_auth_login_relayed(user_line: bytes) -> None:
    pw = B64_PASSWORD.encode() + b"\r\n"
    actions = drive(
        [
            b"EHLO pc\r\n",
            b"AUTH LOGIN\r\n",
            user_line,
            pw,
            b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n",
            b"x\r\n.\r\n",
        ],
        [
            GREETING,
            EHLO_REPLY,
            b"334 VXNlcm5hbWU6\r\n",
            b"334 UGFzc3dvcmQ6\r\n",
            b"235 2.7.0 ok\r\n",
            OK + OK + GO_AHEAD,
            QUEUED,
        ],
    )
    assert to_upstream(actions).startswith(b"EHLO pc\r\nAUTH LOGIN\r\n" + user_line + pw)
    (report,) = reports(actions)
    expected = "carol" if user_line.startswith(b"Y2") else None
    assert report["smtp"]["auth_user"] == expected  # type: ignore[index]
    assert PASSWORD not in log_text(actions)  # never the password, even if the user is odd


def test_client_auth_continuation_not_parsed_as_command() -> None:
    actions = drive(
        [b"EHLO pc\r\n", b"AUTH LOGIN\r\n", b"QUIT\r\n", b"STARTTLS\r\n"],
        [GREETING, EHLO_REPLY, b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n", b"535 no\r\n"],
    )
    assert to_upstream(actions) == b"EHLO pc\r\nAUTH LOGIN\r\nQUIT\r\nSTARTTLS\r\n"
    assert not of_type(actions, Close) and not of_type(actions, StartTls)


def test_client_auth_failure_records_no_user() -> None:
    actions = drive(
        [
            b"EHLO pc\r\n",
            b"AUTH PLAIN AGNhcm9sAHg=\r\n",
            b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n",
            b"x\r\n.\r\n",
        ],
        [GREETING, EHLO_REPLY, b"535 5.7.8 no\r\n", OK + OK + GO_AHEAD, QUEUED],
    )
    assert reports(actions)[0]["smtp"]["auth_user"] is None  # type: ignore[index]


# --- the provider goes away ------------------------------------------------------------------
def in_data(**settings: object) -> Driver:
    driver = Driver(make_relay(**settings))
    driver.run(
        [b"EHLO pc\r\n", b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n", b"part one\r\n"],
        [GREETING, EHLO_REPLY, OK + OK + GO_AHEAD],
    )
    assert driver.relay.reading is Side.CLIENT
    return driver


def test_upstream_lost_mid_data_consumes_to_the_end() -> None:
    driver = in_data()
    driver.relay.upstream_lost("connection reset")
    acts = driver.drain()
    assert AbortMessage() in acts and not of_type(acts, SendClient)
    assert driver.relay.reading is Side.CLIENT  # keep reading the client's DATA
    before = len(driver.log)
    actions = driver.run([b"part two\r\n", b".\r\nNOOP\r\n"])
    tail = actions[before:]
    assert not of_type(tail, SendUpstream) and not of_type(tail, MessageData)
    assert not of_type(tail, CommitMessage)
    assert tail[-2:] == [
        SendClient(b"451 4.4.2 Connection to provider lost, message not sent\r\n"),
        Close(),
    ]
    assert driver.relay.reading is None


@pytest.mark.parametrize("how", ["lost", "eof", "timeout", "garbage"])
def test_upstream_lost_after_the_final_dot(how: str) -> None:
    driver = in_data()
    driver.run([b".\r\n"])
    assert SendUpstream(b".\r\n") in driver.log and driver.relay.reading is Side.UPSTREAM
    before = len(driver.log)
    if how == "lost":
        driver.relay.upstream_lost("connection reset")
    elif how == "eof":
        driver.relay.receive_upstream(b"")
    elif how == "timeout":
        driver.relay.timeout(Side.UPSTREAM)
    else:
        driver.relay.receive_upstream(b"hello?\r\n")
    driver.drain()
    tail = driver.log[before:]
    assert tail[-2:] == [
        SendClient(
            b"451 4.4.2 Connection to provider lost after the message was sent;"
            b" delivery status unknown\r\n"
        ),
        Close(),
    ]
    assert RecordOutcome("unknown", None) in tail
    assert not of_type(tail, AbortMessage)  # the copy is committed: keep it
    (log,) = of_type(tail, LogTransaction)
    assert log.fields["outcome"] == "unknown"  # type: ignore[attr-defined]
    assert driver.relay.reading is None


def test_upstream_lost_while_the_copy_is_committed() -> None:
    # The last data chunk's send fails: the driver reports the loss before it performs
    # the CommitMessage that was queued behind it.
    driver = in_data()
    relay = driver.relay
    relay.receive_client(b".\r\n")
    acts = relay.actions()
    assert acts[-1] == CommitMessage()
    relay.upstream_lost("broken pipe")
    relay.archive_result(True)  # the driver then performs CommitMessage
    tail = relay.actions()
    assert SendUpstream(b".\r\n") not in tail
    assert RecordOutcome("unknown", None) in tail
    assert tail[-2:] == [
        SendClient(b"451 4.4.2 Connection to provider lost, message not sent\r\n"),
        Close(),
    ]


def test_upstream_replies_before_the_final_dot() -> None:
    driver = Driver(make_relay())
    actions = driver.run(
        [b"EHLO pc\r\n", b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhi\r\n.\r\n"],
        [GREETING, EHLO_REPLY, OK + OK + GO_AHEAD + QUEUED],
    )
    assert SendUpstream(b".\r\n") not in actions
    assert QUEUED not in to_client(actions)
    assert actions[-1] == Close()
    assert to_client(actions).endswith(
        b"451 4.4.2 Connection to provider lost, message not sent\r\n"
    )


def test_upstream_lost_when_idle() -> None:
    driver = Driver(make_relay())
    driver.run([b"NOOP\r\n"], [GREETING])
    driver.relay.receive_upstream(b"")
    acts = driver.drain()
    assert acts[-2:] == [
        SendClient(b"421 4.4.2 mailtee.localdomain Connection to provider lost, closing\r\n"),
        Close(),
    ]


def test_upstream_timeout() -> None:
    relay = make_relay()
    relay.timeout(Side.UPSTREAM)
    assert relay.actions()[-2:] == [
        SendClient(b"421 4.4.2 mailtee.localdomain Provider timed out, closing\r\n"),
        Close(),
    ]


def test_upstream_unavailable() -> None:
    relay = SmtpRelay(make_relay().settings)
    relay.upstream_unavailable("smtp.example.net:587: Connection refused")
    acts = relay.actions()
    assert acts[-2:] == [
        SendClient(
            b"421 4.4.1 mailtee.localdomain Service not available: provider unreachable\r\n"
        ),
        Close(),
    ]
    assert "Connection refused" in acts[0].message  # type: ignore[union-attr]
    assert relay.reading is None


@pytest.mark.parametrize(
    "garbage",
    [b"hello\r\n", b"250-a\r\n550 b\r\n", b"9" * 3000 + b"\r\n", b"250-x\r\n" * 300],
)
def test_upstream_protocol_error(garbage: bytes) -> None:
    actions = drive([b"EHLO pc\r\n"], [GREETING, garbage])
    assert actions[-2:] == [
        SendClient(b"421 4.4.0 mailtee.localdomain Provider sent an invalid reply, closing\r\n"),
        Close(),
    ]


# --- the client goes away ------------------------------------------------------------------
def test_client_timeout() -> None:
    driver = Driver(make_relay())
    driver.run([], [GREETING])
    driver.relay.timeout(Side.CLIENT)
    acts = driver.drain()
    assert acts == [SendClient(b"421 4.4.2 mailtee.localdomain Idle timeout, closing\r\n"), Close()]


def test_client_timeout_mid_data_aborts_the_copy() -> None:
    driver = in_data()
    driver.relay.timeout(Side.CLIENT)
    acts = driver.drain()
    assert acts == [
        AbortMessage(),
        SendClient(b"421 4.4.2 mailtee.localdomain Idle timeout, closing\r\n"),
        Close(),
    ]


def test_client_eof_mid_data_aborts_the_copy() -> None:
    driver = in_data()
    driver.relay.receive_client(b"")
    assert driver.drain() == [AbortMessage(), Close()]
    assert driver.relay.reading is None


def test_nothing_happens_after_close() -> None:
    driver = Driver(make_relay())
    driver.run([b"QUIT\r\n"], [GREETING, BYE])
    relay = driver.relay
    relay.receive_client(b"NOOP\r\n")
    relay.receive_upstream(b"250 ok\r\n")
    relay.upstream_lost()
    relay.client_lost()
    relay.timeout(Side.CLIENT)
    relay.archive_result(True)
    assert relay.actions() == [] and relay.reading is None
