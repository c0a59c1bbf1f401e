"""Pop3Relay driven with byte strings: sessions, RETR archiving, limits, failures."""

from __future__ import annotations

import ast
import base64
import subprocess
import sys
from pathlib import Path

import pytest
from pop3_harness import (
    CAPA_REPLY,
    GREETING,
    MESSAGE,
    RETR_STATUS,
    STUFFED,
    Driver,
    chunked,
    drive,
    make_relay,
    merged,
    message_data,
    of_type,
    reports,
    to_client,
    to_upstream,
)

import proxy.pop3
from archive.report_sections import MessageStart, Pop3Section
from proxy.actions import (
    AbortMessage,
    BeginMessage,
    Close,
    CommitMessage,
    LogEvent,
    LogTransaction,
    MessageData,
    SendClient,
    SendUpstream,
    Side,
    StartTls,
)
from proxy.errors import LocalProtocolError

LOGIN = [b"USER alice\r\n", b"PASS secret\r\n"]
LOGIN_REPLIES = [[b"+OK\r\n"], [b"+OK Logged in.\r\n"]]


def greeted(**settings: object) -> Driver:
    driver = Driver(make_relay(**settings))
    driver.run([], [[GREETING]])
    driver.log.clear()
    return driver


# --- greeting, lockstep -------------------------------------------------------------


def test_greeting_is_relayed_verbatim_then_the_client_is_read() -> None:
    relay = make_relay()
    assert relay.reading is Side.UPSTREAM
    relay.receive_upstream(GREETING[:10])
    assert relay.actions() == []
    relay.receive_upstream(GREETING[10:])
    assert relay.actions() == [SendClient(GREETING)]  # APOP timestamp intact
    assert relay.reading is Side.CLIENT


def test_negative_greeting_is_relayed_and_ends_the_session() -> None:
    actions = drive([], [[b"-ERR [SYS/TEMP] go away\r\n"]])
    assert actions == [SendClient(b"-ERR [SYS/TEMP] go away\r\n"), Close()]


def test_pipelined_commands_wait_for_their_turn() -> None:
    driver = greeted()
    relay = driver.relay
    relay.receive_client(b"USER alice\r\nPASS secret\r\nSTAT\r\n")
    assert driver.drain() == [SendUpstream(b"USER alice\r\n")]
    assert relay.reading is Side.UPSTREAM
    relay.receive_upstream(b"+OK\r\n")
    assert driver.drain() == [SendClient(b"+OK\r\n"), SendUpstream(b"PASS secret\r\n")]
    relay.receive_upstream(b"+OK Logged in.\r\n")
    assert driver.drain() == [SendClient(b"+OK Logged in.\r\n"), SendUpstream(b"STAT\r\n")]
    relay.receive_upstream(b"+OK 2 320\r\n")
    assert driver.drain() == [SendClient(b"+OK 2 320\r\n")]
    assert relay.reading is Side.CLIENT


@pytest.mark.parametrize(
    "line",
    [b"NOOP\r\n", b"RSET\r\n", b"DELE 1\r\n", b"LIST 2\r\n", b"utf8\r\n"],
)
def test_single_line_commands_and_unknown_ones_pass_verbatim(line: bytes) -> None:
    actions = drive([line], [[GREETING], [b"+OK whatever\r\n"]])
    assert actions[1:] == [SendUpstream(line), SendClient(b"+OK whatever\r\n")]


def test_unknown_verb_is_relayed_then_probed_with_noop() -> None:
    actions = drive([b"XTND XMIT\r\n"], [[GREETING], [b"+OK whatever\r\n"], [b"+OK\r\n"]])
    assert actions[1:] == [
        SendUpstream(b"XTND XMIT\r\n"),
        SendClient(b"+OK whatever\r\n"),
        SendUpstream(b"NOOP\r\n"),  # its answer is ours, not the client's
    ]


@pytest.mark.parametrize("split", [False, True], ids=["same-segment", "later-segment"])
def test_multiline_answer_to_an_unclassified_verb_ends_the_session(split: bool) -> None:
    """A server that answers an unknown verb with data lines (a message!) cannot slip
    them past the relay: whether they come with the +OK or later, the NOOP probe or the
    unsolicited-data check ends the session before the client gets a data line."""
    body = b"Subject: x\r\n\r\nsecret\r\n.\r\n"
    reply = [[b"+OK here it is\r\n"], [body]] if split else [[b"+OK here it is\r\n" + body]]
    actions = drive([b"XRETR 1\r\n", b"DELE 1\r\n"], [[GREETING], *reply, [b"+OK\r\n"]])
    assert b"secret" not in to_client(actions)
    assert b"DELE" not in to_upstream(actions)
    assert actions[-1] == Close()


def test_quit_reply_then_close() -> None:
    actions = drive([b"QUIT\r\n", b"NOOP\r\n"], [[GREETING], [b"+OK Bye\r\n"]])
    assert actions[1:] == [SendUpstream(b"QUIT\r\n"), SendClient(b"+OK Bye\r\n"), Close()]


def test_client_eof_closes_without_quit_upstream() -> None:
    # No QUIT: the provider must not enter UPDATE and expunge what the client DELEd.
    driver = greeted()
    driver.relay.receive_client(b"")
    assert driver.drain() == [Close()]
    assert driver.relay.reading is None


# --- CAPA -----------------------------------------------------------------------------


def capa_lines(**settings: object) -> list[bytes]:
    actions = drive([b"CAPA\r\n"], [[GREETING], [CAPA_REPLY]], **settings)
    return to_client(actions[1:]).split(b"\r\n")


def test_capa_drops_upstream_stls_when_the_listener_has_no_tls() -> None:
    lines = capa_lines()
    assert b"STLS" not in lines
    assert lines == [b"+OK", b"CAPA", b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING"] + [
        b"USER",
        b"SASL PLAIN LOGIN",
        b".",
        b"",
    ]


def test_capa_offers_the_proxys_stls_on_a_starttls_listener() -> None:
    lines = capa_lines(client_tls="starttls")
    assert lines.count(b"STLS") == 1
    assert lines[-3:] == [b"STLS", b".", b""]
    assert b"USER" in lines and b"SASL PLAIN LOGIN" in lines  # kept before TLS


def test_capa_after_client_tls_and_on_implicit_tls_has_no_stls() -> None:
    actions = drive([b"STLS\r\n", b"CAPA\r\n"], [[GREETING], [CAPA_REPLY]], client_tls="starttls")
    assert b"STLS\r\n" not in to_client(actions).split(b"+OK Begin TLS negotiation\r\n")[1]
    assert b"STLS" not in capa_lines(client_tls="implicit")


def test_capa_rewrite_is_independent_of_chunking() -> None:
    expected = to_client(drive([b"CAPA\r\n"], [[GREETING], [CAPA_REPLY]], client_tls="starttls"))
    for cut in range(1, len(CAPA_REPLY)):
        replies = [[GREETING], chunked(CAPA_REPLY, [cut])]
        actions = drive([b"CAPA\r\n"], replies, client_tls="starttls")
        assert to_client(actions) == expected, cut


def test_negative_capa_is_relayed_verbatim() -> None:
    actions = drive([b"CAPA\r\n"], [[GREETING], [b"-ERR unknown command\r\n"]])
    assert actions[-1] == SendClient(b"-ERR unknown command\r\n")


# --- logging in -----------------------------------------------------------------------


def test_user_pass_records_the_account_only_when_accepted() -> None:
    driver = greeted()
    driver.run([b"USER alice\r\n", b"PASS wrong\r\n"], [[b"+OK\r\n"], [b"-ERR [AUTH] no\r\n"]])
    assert driver.log[-1] == SendClient(b"-ERR [AUTH] no\r\n")  # verbatim
    assert driver.relay.account is None and not driver.relay.authenticated
    driver.run([b"USER bob\r\n", b"PASS secret\r\n"], [[b"+OK\r\n"], [b"+OK in\r\n"]])
    assert driver.relay.account == "bob" and driver.relay.authenticated


def test_rejected_user_is_not_recorded() -> None:
    driver = greeted()
    driver.run([b"USER mallory\r\n", b"PASS x\r\n"], [[b"-ERR no\r\n"], [b"+OK odd\r\n"]])
    assert driver.relay.account is None


def test_apop_records_its_first_argument() -> None:
    line = b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"
    driver = greeted()
    driver.run([line], [[b"+OK maildrop has 1 message\r\n"]])
    assert to_upstream(driver.log) == line
    assert driver.relay.account == "mrose"


def plain(authz: str, authc: str, password: str) -> bytes:
    return base64.b64encode(f"{authz}\0{authc}\0{password}".encode())


def test_auth_plain_initial_response() -> None:
    line = b"AUTH PLAIN " + plain("", "alice", "secret") + b"\r\n"
    driver = greeted()
    driver.run([line], [[b"+OK Logged in.\r\n"]])
    assert driver.log == [SendUpstream(line), SendClient(b"+OK Logged in.\r\n")]
    assert driver.relay.account == "alice"


def test_auth_plain_prefers_the_authorization_identity() -> None:
    line = b"AUTH PLAIN " + plain("shared", "admin", "secret") + b"\r\n"
    driver = greeted()
    driver.run([line], [[b"+OK\r\n"]])
    assert driver.relay.account == "shared"


def test_auth_continuations_are_relayed_not_parsed_as_commands() -> None:
    # A continuation line that looks like a command must go upstream untouched.
    driver = greeted(client_tls="starttls")
    response = plain("", "alice", "secret") + b"\r\n"
    driver.run(
        [b"AUTH PLAIN\r\n", response],
        [[b"+ \r\n"], [b"+OK Logged in.\r\n"]],
    )
    assert driver.log == [
        SendUpstream(b"AUTH PLAIN\r\n"),
        SendClient(b"+ \r\n"),
        SendUpstream(response),
        SendClient(b"+OK Logged in.\r\n"),
    ]
    assert driver.relay.account == "alice"
    driver = greeted(client_tls="starttls")
    driver.run([b"AUTH X-TOKEN\r\n", b"STLS\r\n", b"QUIT\r\n"], [[b"+ go\r\n"], [b"-ERR\r\n"]])
    assert driver.log[:4] == [
        SendUpstream(b"AUTH X-TOKEN\r\n"),
        SendClient(b"+ go\r\n"),
        SendUpstream(b"STLS\r\n"),  # not the proxy's STLS: a SASL response
        SendClient(b"-ERR\r\n"),
    ]
    assert driver.log[4] == SendUpstream(b"QUIT\r\n")  # a command again after the exchange


def test_auth_login_records_the_first_response_and_logs_no_secret() -> None:
    user, password = base64.b64encode(b"alice"), base64.b64encode(b"s3cr3t-pw")
    driver = greeted()
    driver.run(
        [b"AUTH LOGIN\r\n", user + b"\r\n", password + b"\r\n"],
        [[b"+ VXNlcm5hbWU6\r\n"], [b"+ UGFzc3dvcmQ6\r\n"], [b"+OK Logged in.\r\n"]],
    )
    assert to_upstream(driver.log) == b"AUTH LOGIN\r\n" + user + b"\r\n" + password + b"\r\n"
    assert driver.relay.account == "alice"
    logged = repr([a for a in driver.log if not isinstance(a, SendUpstream)])
    assert "s3cr3t" not in logged and password.decode() not in logged


def test_auth_failure_reaches_the_client_and_records_nothing() -> None:
    line = b"AUTH PLAIN " + plain("", "alice", "nope") + b"\r\n"
    driver = greeted()
    driver.run([line], [[b"-ERR [AUTH] Authentication failed.\r\n"]])
    assert driver.log[-1] == SendClient(b"-ERR [AUTH] Authentication failed.\r\n")
    assert driver.relay.account is None and not driver.relay.authenticated


def test_auth_without_arguments_lists_mechanisms_multi_line() -> None:
    reply = b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"
    actions = drive([b"AUTH\r\n", b"NOOP\r\n"], [[GREETING], [reply], [b"+OK\r\n"]])
    assert to_client(actions[1:]) == reply + b"+OK\r\n"
    assert to_upstream(actions) == b"AUTH\r\nNOOP\r\n"


# --- RETR -----------------------------------------------------------------------------

RETR_REPLY = RETR_STATUS + STUFFED + b".\r\n"
UIDL_LIST = b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n"


def session_with_retr(client_tail: list[bytes] | None = None, **kw: object) -> Driver:
    """Logged in, UIDL listed, then RETR 1 (reply not fed yet)."""
    driver = greeted(**kw)
    driver.run([*LOGIN, b"UIDL\r\n"], [*LOGIN_REPLIES, [UIDL_LIST]])
    driver.log.clear()
    driver.relay.receive_client(b"".join([b"RETR 1\r\n", *(client_tail or [])]))
    driver.drain()
    return driver


def test_retr_is_streamed_archived_and_ended_only_after_the_copy_is_durable() -> None:
    driver = session_with_retr()
    relay = driver.relay
    assert driver.log[-1] == SendUpstream(b"RETR 1\r\n")  # UIDL known: no extra query
    driver.log.clear()
    relay.receive_upstream(RETR_REPLY)
    actions = relay.actions()  # not drained: the commit is still unanswered
    assert actions == [
        SendClient(RETR_STATUS),
        BeginMessage(
            MessageStart("incoming", pop3=Pop3Section("alice", "whqtswO00WBw418f9t5JxYwZ", 1))
        ),
        SendClient(STUFFED),
        MessageData(MESSAGE),
        CommitMessage(outcome="delivered", reply="+OK 120 octets"),
    ]
    assert not to_client(actions).endswith(b".\r\n")  # the end is withheld
    assert relay.reading is Side.CLIENT
    relay.archive_result(True)
    assert relay.actions() == [
        SendClient(b".\r\n"),
        LogTransaction(
            {
                "protocol": "pop3",
                "user": "alice",
                "msg": 1,
                "uidl": "whqtswO00WBw418f9t5JxYwZ",
                "size": len(MESSAGE),
                "outcome": "delivered",
                "archived": True,
            }
        ),
    ]


def retr_outputs(chunks: list[bytes]) -> tuple[bytes, bytes, list[type]]:
    driver = session_with_retr()
    driver.log.clear()
    driver.run([], [chunks])
    skeleton = merged(a for a in driver.log if not isinstance(a, MessageData))
    return to_client(driver.log), message_data(driver.log), [type(a) for a in skeleton]


def test_retr_every_split_gives_identical_client_bytes_and_copy() -> None:
    expected = (RETR_REPLY, MESSAGE, retr_outputs([RETR_REPLY])[2])
    assert expected[2] == [
        SendClient,
        BeginMessage,
        SendClient,
        CommitMessage,
        SendClient,
        LogTransaction,
    ]
    for a in range(1, len(RETR_REPLY)):
        for b in range(a + 1, len(RETR_REPLY), 7):
            assert retr_outputs(chunked(RETR_REPLY, [a, b])) == expected, (a, b)
    assert retr_outputs([bytes([c]) for c in RETR_REPLY]) == expected


def test_end_of_retr_is_not_sent_before_archive_result_even_byte_by_byte() -> None:
    driver = session_with_retr()
    relay = driver.relay
    driver.log.clear()
    sent = b""
    for c in RETR_REPLY:
        relay.receive_upstream(bytes([c]))
        acts = relay.actions()
        sent += to_client(acts)
        if any(isinstance(a, CommitMessage) for a in acts):
            break
    assert sent == RETR_STATUS + STUFFED
    relay.archive_result(True)
    assert to_client(relay.actions()) == b".\r\n"


def test_archive_failure_drops_the_client_before_the_end_of_the_message() -> None:
    driver = session_with_retr([b"DELE 1\r\n"])
    driver.archive_ok = False
    driver.log.clear()
    driver.run([], [[RETR_REPLY]])
    after_commit = driver.log[[type(a) for a in driver.log].index(CommitMessage) + 1 :]
    assert not of_type(after_commit, SendClient) and not of_type(after_commit, SendUpstream)
    assert after_commit[-1] == Close()
    (event,) = of_type(after_commit, LogEvent)
    assert event.level == "error" and "No space left" in event.message
    (tx,) = of_type(after_commit, LogTransaction)
    assert tx.fields["outcome"] == "dropped" and tx.fields["archived"] is False
    assert b"DELE" not in to_upstream(driver.log)
    assert driver.relay.reading is None


def test_archive_failure_in_pass_mode_relays_and_alerts() -> None:
    driver = session_with_retr([b"DELE 1\r\n"], on_archive_failure="pass")
    driver.archive_ok = False
    driver.log.clear()
    driver.run([], [[RETR_REPLY], [b"+OK deleted\r\n"]])
    assert to_client(driver.log) == RETR_REPLY + b"+OK deleted\r\n"
    (event,) = of_type(driver.log, LogEvent)
    assert event.level == "error" and "NOT archived" in event.message
    (tx,) = of_type(driver.log, LogTransaction)
    assert tx.fields["archived"] is False
    assert Close() not in driver.log


def test_retr_asks_uidl_first_when_the_session_does_not_know_it() -> None:
    driver = greeted()
    driver.run([*LOGIN, b"RETR 2\r\n"], [*LOGIN_REPLIES, [b"+OK 2 QhdPYR:00WBw1Ph7x7\r\n"]])
    assert driver.log[-2:] == [SendUpstream(b"UIDL 2\r\n"), SendUpstream(b"RETR 2\r\n")]
    assert b"QhdPYR" not in to_client(driver.log)  # our own query is not relayed
    driver.run([], [[b"+OK 3 octets\r\nhi\r\n.\r\n"]])
    assert reports(driver.log)[0]["pop3"] == {
        "user": "alice",
        "uidl": "QhdPYR:00WBw1Ph7x7",
        "msg": 2,
    }
    # Known now: a second RETR 2 goes straight upstream.
    driver.log.clear()
    driver.run([b"RETR 2\r\n"], [])
    assert driver.log == [SendUpstream(b"RETR 2\r\n")]


def test_retr_without_uidl_support_is_still_archived() -> None:
    driver = greeted()
    driver.run(
        [*LOGIN, b"RETR 1\r\n"],
        [*LOGIN_REPLIES, [b"-ERR unknown command\r\n"], [b"+OK\r\nbody\r\n.\r\n"]],
    )
    assert reports(driver.log)[0]["pop3"]["uidl"] is None
    assert message_data(driver.log) == b"body\r\n"
    assert to_client(driver.log).endswith(b"+OK\r\nbody\r\n.\r\n")
    assert b"unknown command" not in to_client(driver.log)


def test_client_uidl_n_is_remembered() -> None:
    driver = greeted()
    driver.run([*LOGIN, b"UIDL 3\r\n", b"RETR 3\r\n"], [*LOGIN_REPLIES, [b"+OK 3 abc\r\n"]])
    assert driver.log[-3:] == [
        SendUpstream(b"UIDL 3\r\n"),
        SendClient(b"+OK 3 abc\r\n"),
        SendUpstream(b"RETR 3\r\n"),
    ]


def test_negative_retr_is_relayed_and_nothing_is_archived() -> None:
    driver = session_with_retr()
    driver.log.clear()
    driver.run([], [[b"-ERR no such message\r\n"]])
    assert driver.log == [SendClient(b"-ERR no such message\r\n")]


def test_partial_top_is_relayed_but_not_archived() -> None:
    reply = b"+OK\r\nSubject: x\r\n\r\n..line\r\nmore\r\n.\r\n"
    actions = drive(
        [*LOGIN, b"TOP 1 1\r\n"],
        [[GREETING], *LOGIN_REPLIES, [b"+OK 1 500\r\n"], [b"+OK 1 u1\r\n"], [reply]],
    )
    assert to_upstream(actions).endswith(b"LIST 1\r\nUIDL 1\r\nTOP 1 1\r\n")
    assert to_client(actions).endswith(b"+OK Logged in.\r\n" + reply)  # lookups hidden
    assert not of_type(actions, BeginMessage) and not of_type(actions, MessageData)


TOP_WHOLE = b"Subject: x\r\n\r\n.line\r\ntwo\r\n"


@pytest.mark.parametrize(
    ("top", "size"),
    [
        (b"TOP 1 99999999\r\n", 500),  # fetchmail: the body ends before the count
        (b"TOP 1 2\r\n", len(TOP_WHOLE)),  # exactly the body's lines: the size decides
        (b"TOP 1\r\n", 500),  # no count: never under-archive
    ],
)
def test_whole_top_is_archived_and_its_terminator_waits(top: bytes, size: int) -> None:
    reply = b"+OK\r\n" + TOP_WHOLE.replace(b"\n.", b"\n..") + b".\r\n"
    driver = greeted()
    driver.archive_ok = False  # withheld: on failure the client never sees the end
    actions = driver.run(
        [*LOGIN, top], [*LOGIN_REPLIES, [b"+OK 1 %d\r\n" % size], [b"+OK 1 u1\r\n"], [reply]]
    )
    (rep,) = reports(actions)
    assert rep["pop3"] == {"user": "alice", "uidl": "u1", "msg": 1}
    assert message_data(actions) == TOP_WHOLE
    commit = actions.index(next(a for a in actions if isinstance(a, CommitMessage)))
    assert not to_client(actions[commit:]).endswith(b".\r\n")
    assert to_client(actions).endswith(reply[:-3])
    assert actions[-1] == Close()


def test_top_learns_sizes_from_the_clients_own_list() -> None:
    listing = b"+OK 1 messages\r\n1 %d\r\n.\r\n" % len(TOP_WHOLE)
    reply = b"+OK\r\n" + TOP_WHOLE.replace(b"\n.", b"\n..") + b".\r\n"
    actions = drive(
        [b"LIST\r\n", b"UIDL 1\r\n", b"TOP 1 2\r\n"],
        [[GREETING], [listing], [b"+OK 1 u1\r\n"], [reply]],
    )
    assert b"LIST 1" not in to_upstream(actions)  # nothing to ask: the size was listed
    assert message_data(actions) == TOP_WHOLE
    assert to_client(actions).endswith(reply)  # archived, then the terminator


def test_big_partial_top_is_spooled_then_aborted() -> None:
    body = b"Subject: big\r\n\r\n" + (b"x" * 100 + b"\r\n") * 1000
    reply = b"+OK\r\n" + body + b".\r\n"  # > TOP_HOLD_MAX, partial (size short)
    actions = drive(
        [b"TOP 1 1000\r\n"],
        [[GREETING], [b"+OK 1 999999999\r\n"], [b"+OK 1 u1\r\n"], [reply]],
    )
    assert len(of_type(actions, BeginMessage)) == 1 and of_type(actions, AbortMessage)
    assert not of_type(actions, CommitMessage)
    assert to_client(actions).endswith(reply)


def test_control_bytes_in_a_command_are_refused_not_relayed() -> None:
    actions = drive([b"RETR\x001\r\n", b"TOP 1\x0b5\r\n"], [[GREETING]])
    assert to_upstream(actions) == b""
    assert to_client(actions) == GREETING + b"-ERR command contains control characters\r\n" * 2


def test_list_and_uidl_are_relayed_whole() -> None:
    listing = b"+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n"
    actions = drive([b"LIST\r\n", b"UIDL\r\n"], [[GREETING], [listing], [UIDL_LIST]])
    assert to_client(actions) == GREETING + listing + UIDL_LIST


def test_upstream_lost_mid_retr_aborts_the_copy_and_closes() -> None:
    driver = session_with_retr()
    driver.log.clear()
    driver.run([], [[RETR_REPLY[:40]]])
    driver.relay.receive_upstream(b"")
    tail = driver.drain()
    assert AbortMessage() in tail and tail[-1] == Close()
    assert not of_type(tail, SendClient)  # nothing spliced into the half-sent message
    assert not of_type(driver.log, CommitMessage)


def test_upstream_timeout_mid_retr_aborts() -> None:
    driver = session_with_retr()
    driver.run([], [[RETR_REPLY[:40]]])
    driver.relay.timeout(Side.UPSTREAM)
    tail = driver.drain()
    assert AbortMessage() in tail and tail[-1] == Close()
    assert not of_type(tail, SendClient)


def test_client_lost_mid_retr_aborts() -> None:
    driver = session_with_retr()
    driver.run([], [[RETR_REPLY[:40]]])
    driver.relay.client_lost()
    tail = driver.drain()
    assert tail[0] == AbortMessage() and tail[-1] == Close()
    (tx,) = of_type(tail, LogTransaction)
    assert tx.fields["outcome"] == "unknown" and tx.fields["archived"] is False


# --- STLS -----------------------------------------------------------------------------


def test_client_stls_is_answered_locally() -> None:
    driver = greeted(client_tls="starttls")
    driver.relay.receive_client(b"STLS\r\n")
    assert driver.relay.actions() == [
        SendClient(b"+OK Begin TLS negotiation\r\n"),
        StartTls(Side.CLIENT),
    ]
    driver.relay.tls_started(Side.CLIENT, "TLSv1.3")
    assert driver.relay.reading is Side.CLIENT
    driver.run([b"STLS\r\n"], [])
    assert driver.relay.actions() == []
    assert driver.log[-1] == SendClient(b"-ERR STLS not available\r\n")  # already on TLS
    assert b"STLS" not in to_upstream(driver.log)


@pytest.mark.parametrize("client_tls", ["none", "implicit"])
def test_stls_is_refused_without_a_starttls_listener(client_tls: str) -> None:
    actions = drive([b"STLS\r\n", b"NOOP\r\n"], [[GREETING], [b"+OK\r\n"]], client_tls=client_tls)
    assert actions[1:] == [
        SendClient(b"-ERR STLS not available\r\n"),
        SendUpstream(b"NOOP\r\n"),
        SendClient(b"+OK\r\n"),
    ]


def test_stls_after_login_is_refused() -> None:
    actions = drive([*LOGIN, b"STLS\r\n"], [[GREETING], *LOGIN_REPLIES], client_tls="starttls")
    assert actions[-1] == SendClient(b"-ERR STLS not available\r\n")


def test_client_stls_with_pipelined_plaintext_is_an_injection() -> None:
    driver = greeted(client_tls="starttls")
    driver.relay.receive_client(b"STLS\r\nUSER evil\r\n")
    actions = driver.relay.actions()
    assert not of_type(actions, StartTls) and not of_type(actions, SendClient)
    assert not of_type(actions, SendUpstream)
    assert isinstance(actions[0], LogEvent) and "injection" in actions[0].message
    assert actions[-1] == Close()


def test_client_tls_failure_closes() -> None:
    driver = greeted(client_tls="starttls")
    driver.relay.receive_client(b"STLS\r\n")
    driver.relay.actions()
    driver.relay.tls_failed(Side.CLIENT, "handshake failure")
    assert driver.relay.actions()[-1] == Close()


def test_upstream_stls_before_the_greeting_reaches_the_client() -> None:
    relay = make_relay(target_tls="starttls")
    relay.receive_upstream(GREETING)
    assert relay.actions() == [SendUpstream(b"STLS\r\n")]
    relay.receive_upstream(b"+OK Begin TLS negotiation now.\r\n")
    assert relay.actions() == [StartTls(Side.UPSTREAM)]
    relay.tls_started(Side.UPSTREAM, "TLSv1.3")
    assert relay.actions() == [SendClient(GREETING)]  # the APOP timestamp stays valid
    assert relay.reading is Side.CLIENT


def test_upstream_stls_response_injection_is_refused() -> None:
    relay = make_relay(target_tls="starttls")
    relay.receive_upstream(GREETING)
    relay.actions()
    relay.receive_upstream(b"+OK Begin TLS\r\n+OK 1 forged\r\n")
    actions = relay.actions()
    assert not of_type(actions, StartTls)
    (event,) = of_type(actions, LogEvent)
    assert "injection" in event.message
    assert actions[-2:] == [SendClient(b"-ERR [SYS/TEMP] mail server protocol error\r\n"), Close()]


def test_upstream_without_stls_is_never_used_in_plaintext() -> None:
    actions = drive(
        [b"USER alice\r\n"], [[GREETING], [b"-ERR not supported\r\n"]], target_tls="starttls"
    )
    assert to_upstream(actions) == b"STLS\r\n"  # USER never went out in the clear
    assert actions[-2:] == [
        SendClient(b"-ERR [SYS/TEMP] cannot secure the connection to the mail server\r\n"),
        Close(),
    ]


def test_upstream_tls_failure_tells_the_client() -> None:
    relay = make_relay(target_tls="starttls")
    relay.receive_upstream(GREETING)
    relay.receive_upstream(b"+OK\r\n")
    relay.actions()
    relay.tls_failed(Side.UPSTREAM, "certificate verify failed")
    actions = relay.actions()
    assert b"cannot secure" in to_client(actions) and actions[-1] == Close()
    assert GREETING not in to_client(actions)


# --- limits and hostile peers ---------------------------------------------------------


def test_long_client_line_is_refused_and_discarded_up_to_crlf() -> None:
    long_line = b"USER " + b"a" * 3000 + b"\r\n"
    chunks = chunked(long_line + b"NOOP\r\n", range(0, len(long_line) + 6, 700))
    actions = drive(chunks, [[GREETING], [b"+OK\r\n"]], max_line_length=512)
    assert actions[1:] == [
        SendClient(b"-ERR line too long\r\n"),
        SendUpstream(b"NOOP\r\n"),
        SendClient(b"+OK\r\n"),
    ]


def test_a_line_of_exactly_the_limit_is_accepted() -> None:
    line = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    assert len(line) == 512
    actions = drive([line], [[GREETING], [b"+OK\r\n"]], max_line_length=512)
    assert actions[1] == SendUpstream(line)
    actions = drive([b"x" + line], [[GREETING]], max_line_length=512)
    assert actions[1] == SendClient(b"-ERR line too long\r\n")


def test_too_many_commands_end_the_session() -> None:
    actions = drive([b"NOOP\r\n"] * 12, [[GREETING], *[[b"+OK\r\n"]] * 12], max_commands=10)
    assert to_upstream(actions) == b"NOOP\r\n" * 10
    assert actions[-2:] == [
        SendClient(b"-ERR [SYS/TEMP] too many commands in one session\r\n"),
        Close(),
    ]


def test_bare_cr_or_lf_in_a_command_is_refused_not_relayed() -> None:
    # Split at LF like a lenient server would, but relay only clean CRLF lines: the
    # upstream never receives bytes it could frame differently from the relay.
    actions = drive([b"NOOP\nSTAT\r\n", b"NOOP\r\r\n"], [[GREETING], [b"+OK 0 0\r\n"]])
    refusal = SendClient(b"-ERR command must end with CRLF and contain no other CR or LF\r\n")
    assert actions[1:] == [refusal, SendUpstream(b"STAT\r\n"), SendClient(b"+OK 0 0\r\n"), refusal]


def test_long_upstream_status_line_is_hostile() -> None:
    actions = drive([b"NOOP\r\n"], [[GREETING], [b"+OK " + b"x" * 600]], max_line_length=512)
    assert actions[-2:] == [SendClient(b"-ERR [SYS/TEMP] mail server protocol error\r\n"), Close()]


def test_garbage_instead_of_a_status_is_hostile() -> None:
    actions = drive([b"NOOP\r\n"], [[GREETING], [b"HTTP/1.1 200 OK\r\n"]])
    assert actions[-2:] == [SendClient(b"-ERR [SYS/TEMP] mail server protocol error\r\n"), Close()]


def test_unsolicited_upstream_data_ends_the_session() -> None:
    # A second reply in the same read: the relay and the server would disagree.
    actions = drive([b"NOOP\r\n", b"NOOP\r\n"], [[GREETING], [b"+OK\r\n+OK 1 extra\r\n"]])
    assert actions[1:3] == [SendUpstream(b"NOOP\r\n"), SendClient(b"+OK\r\n")]
    assert actions[-1] == Close()
    assert to_upstream(actions) == b"NOOP\r\n"


def test_upstream_unavailable_and_lost() -> None:
    relay = Driver(make_relay()).relay
    relay.upstream_unavailable("connection refused")
    actions = relay.actions()
    assert to_client(actions) == b"-ERR [SYS/TEMP] mail server unavailable, try again later\r\n"
    assert actions[-1] == Close()
    actions = drive([b"STAT\r\n"], [[GREETING]])
    driver = greeted()
    driver.run([b"STAT\r\n"], [])
    driver.relay.receive_upstream(b"")
    assert to_client(driver.drain()) == b"-ERR [SYS/TEMP] connection to the mail server lost\r\n"


def test_idle_client_gets_an_error_and_is_closed() -> None:
    driver = greeted()
    driver.relay.timeout(Side.CLIENT)
    assert driver.drain() == [SendClient(b"-ERR [SYS/TEMP] idle timeout\r\n"), Close()]
    driver.relay.receive_client(b"NOOP\r\n")  # after Close: ignored
    assert driver.drain() == []


def test_driver_contract_violations_are_local_errors() -> None:
    relay = make_relay()
    with pytest.raises(LocalProtocolError):
        relay.archive_result(True)
    with pytest.raises(LocalProtocolError):
        relay.tls_started(Side.CLIENT, "TLSv1.3")
    with pytest.raises(LocalProtocolError):
        relay.start()


def test_every_state_change_is_in_the_transitions_table() -> None:
    """The table names every state, and a change it does not list is refused: the
    relay must not reach a state by a path nobody reasoned about (the property and
    fuzz tests drive it through every path they find, against the same table)."""
    from proxy.pop3.relay import _TRANSITIONS, State

    assert set(_TRANSITIONS) == set(State)
    driver = greeted()  # IDLE: a RETR's archiving state is reachable only via its body
    with pytest.raises(LocalProtocolError, match="idle -> archiving"):
        driver.relay._enter(State.ARCHIVING)
    driver.relay._enter(State.CLOSED)  # closing is always allowed
    with pytest.raises(LocalProtocolError, match="closed -> idle"):
        driver.relay._enter(State.IDLE)


# --- the core stays sans-IO -----------------------------------------------------------

FORBIDDEN = {"trio", "socket", "ssl", "asyncio", "selectors", "OpenSSL"}


def test_pop3_modules_import_no_io_library() -> None:
    package = Path(proxy.pop3.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_importing_the_core_loads_no_io_library() -> None:
    code = (
        "import sys, proxy.pop3; "
        f"print(sorted(m for m in {sorted(FORBIDDEN)!r} if m in sys.modules))"
    )
    root = Path(proxy.pop3.__file__).parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
