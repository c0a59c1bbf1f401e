"""A synchronous driver for the OAuth cores: bytes in, actions out, logins answered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.actions import Action, CommitMessage, SendClient, SendUpstream, StartTls
from proxy.login import LoginResult, VerifyLogin

RESPONSE = b"dXNlcj1hQGV4LnRlc3QBYXV0aD1CZWFyZXIgdG9rZW4BAQ=="
OK = LoginResult("ok", user="alice", response=RESPONSE, account="acc")


@dataclass
class CoreDriver:
    core: object
    answer: Callable[[VerifyLogin], LoginResult] = lambda v: OK
    logins: list[VerifyLogin] = field(default_factory=list)
    log: list[Action] = field(default_factory=list)

    def drain(self) -> list[Action]:
        new: list[Action] = []
        while acts := self.core.actions():  # type: ignore[attr-defined]
            for a in acts:
                new.append(a)
                if isinstance(a, StartTls):
                    self.core.tls_started(a.side, "TLSv1.3")  # type: ignore[attr-defined]
                elif isinstance(a, CommitMessage):
                    self.core.archive_result(True)  # type: ignore[attr-defined]
                elif isinstance(a, VerifyLogin):
                    self.logins.append(a)
                    self.core.login_result(self.answer(a))  # type: ignore[attr-defined]
        self.log += new
        return new

    def client(self, data: bytes) -> bytes:
        """Feed the client; return what the client was sent in answer."""
        self.core.receive_client(data)  # type: ignore[attr-defined]
        return to_client(self.drain())

    def upstream(self, data: bytes) -> list[Action]:
        self.core.receive_upstream(data)  # type: ignore[attr-defined]
        return self.drain()

    @property
    def sent_upstream(self) -> bytes:
        return b"".join(a.data for a in self.log if isinstance(a, SendUpstream))


def to_client(actions: list[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendClient))


def to_upstream(actions: list[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendUpstream))
