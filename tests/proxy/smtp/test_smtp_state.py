"""The SMTP core's state machine: the TRANSITIONS table, and the states real sessions take."""

from __future__ import annotations

import itertools

import pytest
from smtp_harness import EHLO_REPLY, GO_AHEAD, GREETING, OK, QUEUED, make_relay

from proxy.actions import Side, StartTls
from proxy.errors import LocalProtocolError
from proxy.smtp import relay as relay_module
from proxy.smtp.relay import TRANSITIONS, Event, SmtpRelay, State

ILLEGAL = [(s, e) for s, e in itertools.product(State, Event) if (s, e) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=lambda v: v.value)
def test_every_transition_the_table_does_not_list_is_refused(state: State, event: Event) -> None:
    relay = SmtpRelay(make_relay().settings)
    relay._state = state  # white box: the one place that changes it must refuse
    with pytest.raises(LocalProtocolError, match=f"{event.value} in state {state.value}"):
        relay._to(event)
    assert relay.state is state


@pytest.mark.parametrize(("edge", "target"), list(TRANSITIONS.items()), ids=str)
def test_every_listed_transition_is_taken(edge: tuple[State, Event], target: State) -> None:
    relay = SmtpRelay(make_relay().settings)
    relay._state = edge[0]
    relay._to(edge[1])
    assert relay.state is target


def test_the_table_is_connected_and_closes_from_everywhere() -> None:
    assert len(ILLEGAL) + len(TRANSITIONS) == len(State) * len(Event)
    seen, todo = {State.NEW}, [State.NEW]
    while todo:
        here = todo.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src is here and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    assert seen == set(State)  # every state is reachable from NEW
    assert all(
        TRANSITIONS[(s, Event.CLOSE)] is State.CLOSED for s in State if s is not State.CLOSED
    )
    assert not any(src is State.CLOSED for src, _ in TRANSITIONS)  # CLOSED is final


def test_a_message_walks_data_archiving_delivering() -> None:
    relay = make_relay()
    assert relay.state is State.SETUP
    relay.receive_upstream(GREETING)
    assert relay.state is State.COMMANDS
    relay.receive_client(b"EHLO pc\r\n")
    relay.receive_upstream(EHLO_REPLY)
    relay.receive_client(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    relay.receive_upstream(OK + OK + GO_AHEAD)
    assert relay.state is State.DATA
    relay.receive_client(b"hi\r\n.\r\n")
    assert relay.state is State.ARCHIVING and relay.reading is Side.UPSTREAM
    relay.archive_result(True)
    assert relay.state is State.DELIVERING
    relay.receive_upstream(QUEUED)
    assert relay.state is State.COMMANDS and relay.reading is Side.CLIENT
    relay.client_lost()
    assert relay.state is State.CLOSED and relay.reading is None


def test_a_bare_newline_discards_the_message_to_its_end() -> None:
    relay = make_relay()
    relay.receive_upstream(GREETING)
    relay.receive_client(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    relay.receive_upstream(OK + OK + GO_AHEAD)
    relay.receive_client(b"a\nb\r\n")
    assert relay.state is State.DISCARDING
    relay.receive_client(b".\r\n")
    assert relay.state is State.CLOSED


def test_auth_challenge_starttls_and_the_last_reply() -> None:
    relay = make_relay(client_tls="starttls", max_commands=3)
    relay.receive_upstream(GREETING)
    relay.receive_client(b"STARTTLS\r\n")
    assert relay.state is State.CLIENT_TLS
    assert StartTls(Side.CLIENT) in relay.actions()
    relay.tls_started(Side.CLIENT, "TLSv1.3")
    assert relay.state is State.COMMANDS
    relay.receive_client(b"AUTH LOGIN\r\n")
    relay.receive_upstream(b"334 VXNlcm5hbWU6\r\n")
    assert relay.state is State.AUTH_RESPONSE
    relay.receive_client(b"YQ==\r\n")  # relayed unparsed, not counted as a command
    assert relay.state is State.COMMANDS
    relay.receive_upstream(b"535 5.7.8 no\r\n")
    relay.receive_client(b"NOOP\r\nNOOP\r\n")  # STARTTLS, AUTH, NOOP: the 4th is one too many
    assert relay.state is State.CLOSING  # the 421 waits behind the first NOOP's reply
    relay.receive_upstream(OK)
    assert relay.state is State.CLOSED


def test_tls_started_outside_an_upgrade_breaks_the_driver_contract() -> None:
    relay = make_relay(target_tls="starttls")
    with pytest.raises(LocalProtocolError):
        relay.tls_started(Side.UPSTREAM, "TLSv1.3")  # the core asked for no StartTls
    relay.receive_upstream(GREETING)
    relay.receive_upstream(b"250-x\r\n250 STARTTLS\r\n")
    relay.receive_upstream(b"220 go\r\n")
    assert relay.state is State.UPSTREAM_TLS
    with pytest.raises(LocalProtocolError):
        relay.tls_started(Side.CLIENT, "TLSv1.3")
    relay.tls_started(Side.UPSTREAM, "TLSv1.3")
    assert relay.state is State.COMMANDS


def test_start_twice_is_refused() -> None:
    relay = make_relay()
    with pytest.raises(LocalProtocolError):
        relay.start()


def test_the_docstring_diagram_names_every_state_and_event() -> None:
    doc = relay_module.__doc__ or ""
    assert [s.name for s in State if s.name not in doc] == []
    assert [e.value for e in Event if e.value not in doc] == []
