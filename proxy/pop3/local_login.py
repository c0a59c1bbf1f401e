"""`LocalLoginPop3`: POP3 clients log in to mailtee; mailtee logs in upstream with OAuth2.

Theory of operation. This core wraps an unchanged `Pop3Relay` (the inner relay) and adds
an AUTHORIZATION state of mailtee's own in front of it:

    SETUP   the inner relay reads the provider's greeting (and does STLS upstream); its
            greeting for the client is swallowed -- the client gets ours instead.
    LOCAL   we talk to the client alone: CAPA (what the local login accepts), STLS,
            USER/PASS, AUTH PLAIN. Credentials are taken only on TLS (RFC 2595 / RFC
            8314: implicit TLS or after STLS). A complete login becomes `VerifyLogin`;
            the driver answers with `login_result()`.
    UPAUTH  we feed the inner relay `AUTH XOAUTH2` (or OAUTHBEARER) and, on the
            provider's "+" continuation, the response (the two-step form Office 365
            POP3 requires; no initial response on the command line). A second "+" is an
            error challenge (RFC 7628 3.2.3): we answer it with an empty line.
    RELAY   +OK: from here on every call goes straight to the inner relay, which
            archives RETR exactly as for any other listener.

Nothing reaches the provider from the client before RELAY, so an unauthenticated client
can do nothing upstream (fail closed). Without a token the client gets `-ERR [AUTH]`
(sign-in dead: `account reauth`) or `-ERR [SYS/TEMP]` (token endpoint down), RFC 3206.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum

from proxy.actions import Action, Close, LogEvent, RelayCore, SendClient, Side, StartTls
from proxy.buffer import LineBuffer, LineTooLong, is_crlf_line
from proxy.login import LoginResult, VerifyLogin
from proxy.pop3.limits import COMMAND_LINE_MAX, SASL_LINE_MAX
from proxy.pop3.relay import Pop3Relay
from proxy.settings import RelaySettings

#: failed local logins before the session is closed (slows password guessing)
MAX_LOGIN_FAILURES = 3
#: commands in the AUTHORIZATION state before the session is closed
MAX_LOCAL_COMMANDS = 50

GREETING = b"+OK mailtee POP3 ready\r\n"
CAPA_HEAD = b"+OK Capability list follows\r\n"
OK_USER = b"+OK send PASS\r\n"
ERR_TLS_FIRST = b"-ERR [AUTH] log in only after STLS (use TLS)\r\n"
ERR_LOGIN_FIRST = b"-ERR [AUTH] log in first\r\n"
ERR_BAD_LOGIN = b"-ERR [AUTH] authentication failed\r\n"
ERR_NO_ACCOUNT = b"-ERR [AUTH] no mail account is set up for this user\r\n"
ERR_REAUTH = b"-ERR [AUTH] the mail account must be signed in again by the administrator\r\n"
ERR_TEMP = b"-ERR [SYS/TEMP] cannot get a sign-in token from the provider, try again later\r\n"
ERR_UPSTREAM_REFUSED = b"-ERR [AUTH] the mail provider refused the account's sign-in\r\n"
ERR_MECH = b"-ERR unsupported authentication mechanism (PLAIN)\r\n"
ERR_APOP = b"-ERR APOP is not available here; use USER/PASS over TLS\r\n"
ERR_SYNTAX = b"-ERR syntax error\r\n"
ERR_TOO_MANY = b"-ERR [SYS/TEMP] too many commands\r\n"
BYE = b"+OK bye\r\n"
STLS_BEGIN = b"+OK Begin TLS negotiation\r\n"
STLS_UNAVAILABLE = b"-ERR STLS not available\r\n"
SASL_GO_AHEAD = b"+ \r\n"

_RESULT_REPLY = {
    "bad": ERR_BAD_LOGIN,
    "no_account": ERR_NO_ACCOUNT,
    "reauth": ERR_REAUTH,
    "temp": ERR_TEMP,
}


class Phase(enum.Enum):
    SETUP = "setup"
    LOCAL = "local"
    VERIFY = "verify"
    CLIENT_TLS = "client-tls"
    UPAUTH = "upauth"
    RELAY = "relay"
    CLOSED = "closed"


class LocalLoginPop3(RelayCore):
    def __init__(self, settings: RelaySettings) -> None:
        self._settings = settings
        # The inner relay only ever sees a client on TLS (we insist on it before login).
        self.inner = Pop3Relay(dataclasses.replace(settings, client_tls="implicit"))
        self._phase = Phase.SETUP
        self._out: list[Action] = []
        self._client = LineBuffer()
        self._on_tls = settings.client_tls == "implicit"
        self._user: str | None = None
        self._sasl_plain = False  # the next line is an AUTH PLAIN response
        self._failures = 0
        self._commands = 0
        self._login: LoginResult | None = None
        self._challenges = 0

    @property
    def reading(self) -> Side | None:  # type: ignore[override]
        if self._phase in (Phase.SETUP, Phase.UPAUTH):
            return self.inner.reading
        if self._phase is Phase.RELAY:
            return self.inner.reading
        if self._phase in (Phase.LOCAL, Phase.CLIENT_TLS):
            return Side.CLIENT
        return None

    @property
    def account(self) -> str | None:
        return self.inner.account

    # --- RelayCore --------------------------------------------------------------------
    def actions(self) -> list[Action]:
        if self._phase is Phase.RELAY:
            out, self._out = self._out + self.inner.actions(), []
            return out
        self._absorb()
        out, self._out = self._out, []
        return out

    def start(self) -> None:
        self.inner.start()

    def upstream_unavailable(self, reason: str) -> None:
        self.inner.upstream_unavailable(reason)
        self._pass_through_failure()

    def receive_client(self, data: bytes) -> None:
        if self._phase is Phase.RELAY:
            self.inner.receive_client(data)
            return
        if self._phase is Phase.CLOSED:
            return
        if not data:
            self._close()
            return
        self._client.feed(data)
        self._pump()

    def receive_upstream(self, data: bytes) -> None:
        if self._phase is Phase.CLOSED:
            return
        if self._phase in (Phase.LOCAL, Phase.VERIFY, Phase.CLIENT_TLS):
            # The provider speaks while nobody asked (e.g. its login timeout): end.
            self._emit(LogEvent("warning", "pop3 upstream spoke during the local login"))
            self._send(ERR_TEMP)
            self._close()
            return
        self.inner.receive_upstream(data)

    def tls_started(self, side: Side, version: str) -> None:
        if side is Side.CLIENT and self._phase is Phase.CLIENT_TLS:
            self._on_tls = True
            self._phase = Phase.LOCAL
            self._pump()
            return
        self.inner.tls_started(side, version)

    def tls_failed(self, side: Side, reason: str) -> None:
        if side is Side.CLIENT and self._phase is Phase.CLIENT_TLS:
            self._emit(LogEvent("warning", f"pop3 client TLS failed: {reason}"))
            self._close()
            return
        self.inner.tls_failed(side, reason)
        self._pass_through_failure()

    def archive_result(self, ok: bool, error: str | None = None) -> None:
        self.inner.archive_result(ok, error)

    def upstream_lost(self, reason: str = "connection lost") -> None:
        if self._phase in (Phase.LOCAL, Phase.VERIFY, Phase.CLIENT_TLS, Phase.UPAUTH):
            self._emit(LogEvent("warning", f"pop3 upstream lost: {reason}"))
            self._send(ERR_TEMP)
            self._close()
            return
        self.inner.upstream_lost(reason)
        self._pass_through_failure()

    def client_lost(self) -> None:
        if self._phase is Phase.RELAY:
            self.inner.client_lost()
        else:
            self._close()

    def timeout(self, side: Side) -> None:
        if self._phase in (Phase.RELAY, Phase.SETUP, Phase.UPAUTH):
            self.inner.timeout(side)
            self._pass_through_failure()
        else:
            self._send(b"-ERR [SYS/TEMP] idle timeout\r\n")
            self._close()

    def login_result(self, result: LoginResult) -> None:
        """The driver's answer to VerifyLogin (synchronously, before any read)."""
        if self._phase is not Phase.VERIFY:
            return
        if not result.ok:
            self._emit(LogEvent("warning", f"pop3 local login refused: {result.outcome}"))
            self._send(_RESULT_REPLY.get(result.outcome, ERR_BAD_LOGIN))
            self._failures += 1
            if result.outcome != "bad" or self._failures >= MAX_LOGIN_FAILURES:
                self._close()
            else:
                self._phase = Phase.LOCAL
                self._pump()
            return
        self._login = result
        self._phase = Phase.UPAUTH
        self.inner.receive_client(b"AUTH " + result.mechanism + b"\r\n")

    # --- plumbing -------------------------------------------------------------------
    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _send(self, data: bytes) -> None:
        self._out.append(SendClient(data))

    def _close(self) -> None:
        if self._phase is not Phase.CLOSED:
            self._phase = Phase.CLOSED
            self._out.append(Close())

    def _pass_through_failure(self) -> None:
        """The inner relay failed before RELAY: its error lines go to the client."""
        if self._phase is Phase.RELAY:
            return
        for action in self.inner.actions():
            if self._phase is Phase.SETUP or not isinstance(action, SendClient):
                self._out.append(action)
            if isinstance(action, Close):
                self._phase = Phase.CLOSED

    def _absorb(self) -> None:
        """Route the inner relay's actions in SETUP and UPAUTH."""
        if self._phase is Phase.SETUP:
            batch = self.inner.actions()
            closing = any(isinstance(a, Close) for a in batch)
            for action in batch:
                if isinstance(action, SendClient) and not closing:
                    continue  # the provider's greeting: the client gets ours
                self._out.append(action)
            if closing:
                self._phase = Phase.CLOSED
            elif self.inner.reading is Side.CLIENT:
                self._phase = Phase.LOCAL
                self._send(GREETING)
                self._pump()
        elif self._phase is Phase.UPAUTH:
            self._upauth(self.inner.actions())

    def _upauth(self, batch: list[Action]) -> None:
        assert self._login is not None
        for action in batch:
            if not isinstance(action, SendClient):
                if isinstance(action, Close):
                    self._send(ERR_TEMP)
                    self._phase = Phase.CLOSED
                self._out.append(action)
                continue
            line = action.data
            if line.startswith(b"+OK"):
                self._phase = Phase.RELAY
                self.inner.account = self._login.user
                pipelined = self._client.take_all()  # commands sent behind PASS
                if pipelined:
                    self.inner.receive_client(pipelined)
                self._emit(
                    LogEvent(
                        "info",
                        f"pop3 local login {self._login.user} -> account {self._login.account}",
                    )
                )
                self._send(b"+OK logged in\r\n")
            elif line.startswith(b"+"):
                self._challenges += 1
                # First "+": send the response. Another: an error challenge; end it.
                self.inner.receive_client(
                    (self._login.response if self._challenges == 1 else b"") + b"\r\n"
                )
                self._upauth(self.inner.actions())
            else:
                text = line.rstrip(b"\r\n").decode("utf-8", "replace")[:160]
                self._emit(
                    LogEvent(
                        "error",
                        f"pop3 provider refused account {self._login.account}: {text}",
                    )
                )
                self._send(ERR_UPSTREAM_REFUSED)
                self._close()

    # --- the local AUTHORIZATION state --------------------------------------------
    def _pump(self) -> None:
        while self._phase is Phase.LOCAL:
            limit = SASL_LINE_MAX if self._sasl_plain else COMMAND_LINE_MAX + 2
            try:
                line = self._client.take_line(max(limit, self._settings.max_line_length))
            except LineTooLong:
                self._emit(LogEvent("warning", "pop3 client line too long before login"))
                self._send(b"-ERR line too long\r\n")
                self._close()
                return
            if line is None:
                return
            if not is_crlf_line(line):
                self._send(b"-ERR command must end with CRLF\r\n")
                continue
            self._commands += 1
            if self._commands > MAX_LOCAL_COMMANDS:
                self._send(ERR_TOO_MANY)
                self._close()
                return
            if self._sasl_plain:
                self._sasl_plain = False
                self._plain(line[:-2])
            else:
                self._command(line[:-2])

    def _command(self, line: bytes) -> None:
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        if verb == b"CAPA":
            self._capa()
        elif verb == b"STLS":
            self._stls()
        elif verb == b"QUIT":
            self._send(BYE)
            self._close()
        elif verb == b"APOP":
            self._send(ERR_APOP)
        elif verb in (b"USER", b"PASS", b"AUTH") and not self._on_tls:
            self._send(ERR_TLS_FIRST)
        elif verb == b"USER":
            self._user = arg.decode("utf-8", "replace").strip() or None
            self._send(OK_USER if self._user else ERR_SYNTAX)
        elif verb == b"PASS":
            if self._user is None:
                self._send(b"-ERR USER first\r\n")
            else:
                user, self._user = self._user, None
                self._verify(user, arg.decode("utf-8", "replace"))
        elif verb == b"AUTH":
            self._auth(arg)
        else:
            self._send(ERR_LOGIN_FIRST)

    def _capa(self) -> None:
        lines = [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING"]
        if self._on_tls:
            lines += [b"USER", b"SASL PLAIN"]
        elif self._settings.client_tls == "starttls":
            lines.append(b"STLS")
        lines.append(b"IMPLEMENTATION mailtee")
        self._send(CAPA_HEAD + b"".join(x + b"\r\n" for x in lines) + b".\r\n")

    def _stls(self) -> None:
        if self._settings.client_tls != "starttls" or self._on_tls:
            self._send(STLS_UNAVAILABLE)
            return
        if len(self._client):
            self._emit(LogEvent("warning", "pop3 client: data pipelined after STLS; closed"))
            self._close()
            return
        self._send(STLS_BEGIN)
        self._emit(StartTls(Side.CLIENT))
        self._phase = Phase.CLIENT_TLS

    def _auth(self, arg: bytes) -> None:
        words = arg.split()
        if not words:
            self._send(b"+OK\r\nPLAIN\r\n.\r\n")
            return
        if words[0].upper() != b"PLAIN":
            self._send(ERR_MECH)
            return
        if len(words) > 1 and words[1] != b"=":
            self._plain(words[1])
        else:
            self._sasl_plain = True
            self._send(SASL_GO_AHEAD)

    def _plain(self, response: bytes) -> None:
        if response == b"*":
            self._send(b"-ERR authentication cancelled\r\n")
            return
        try:
            raw = base64.b64decode(response, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        parts = raw.split(b"\0")
        if len(parts) != 3 or not parts[1]:
            self._send(ERR_BAD_LOGIN)
            return
        authzid, authcid, password = (p.decode("utf-8", "replace") for p in parts)
        if authzid and authzid != authcid:
            self._send(ERR_BAD_LOGIN)  # no proxy authorisation as someone else
            return
        self._verify(authcid, password)

    def _verify(self, login: str, password: str) -> None:
        self._phase = Phase.VERIFY
        self._emit(VerifyLogin(login, password))
