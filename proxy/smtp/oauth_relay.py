"""`OAuthSmtpRelay`: SMTP upstream authentication with an OAuth2 token (XOAUTH2/OAUTHBEARER).

Theory of operation. A subclass of the unchanged `SmtpRelay` core, in one of two modes:

- "account" (listener `target_account`, like `target_user`): the driver gets the token
  before the session starts (`provide_token`). When the client's EHLO is answered by the
  provider, the core sends `AUTH XOAUTH2 <initial response>` itself; the client sees the
  EHLO reply only after 235, without AUTH, and never needs to authenticate.
- "local" (listener `local_login`): the client must AUTH PLAIN or LOGIN to mailtee with a
  local user's password, only on TLS (RFC 8314; 538 otherwise). The EHLO reply advertises
  `AUTH PLAIN LOGIN` (never the provider's mechanisms). The core emits `VerifyLogin`; the
  driver answers `login_result()` with the person's SASL response, which goes upstream;
  the provider's 235 becomes the client's 235. Until then MAIL is refused (530), so
  nothing is relayed for an unauthenticated client.

Without a token the client gets 454 4.7.0 (token endpoint down: try later) or 535 5.7.8
(sign-in dead or wrong local password); in account mode the session then ends. If the
provider refuses the token with a challenge (RFC 7628 3.2.3), the core answers it with an
empty line and passes the provider's final reply on (e.g. `535 5.7.139 ...`), so the
tenant-side message reaches the person (docs/troubleshooting.md explains them).
"""

from __future__ import annotations

from proxy.login import LoginResult, VerifyLogin
from proxy.settings import RelaySettings
from proxy.smtp.ehlo import Capabilities, rewrite_ehlo
from proxy.smtp.relay import Pending, SmtpRelay, State, Step, decode_b64
from proxy.smtp.replies import Reply

MAX_LOGIN_FAILURES = 3

NO_TOKEN_TEMP = (
    b"454 4.7.0 {host} Cannot get a sign-in token from the provider, try again later\r\n"
)
NO_TOKEN_REAUTH = (
    b"535 5.7.8 {host} The mail account must be signed in again by the administrator\r\n"
)
NO_ACCOUNT = b"535 5.7.8 {host} No mail account is set up for this user\r\n"
BAD_LOGIN = b"535 5.7.8 Authentication credentials invalid\r\n"
AUTH_OK = b"235 2.7.0 Authentication successful\r\n"
AUTH_REQUIRED = b"530 5.7.0 Authentication required\r\n"
AUTH_MECH = b"504 5.5.4 Unrecognized authentication type (use PLAIN or LOGIN)\r\n"
AUTH_SYNTAX = b"501 5.5.2 Cannot decode the response\r\n"
AUTH_CANCELLED = b"501 5.7.0 Authentication cancelled\r\n"
ALREADY = b"503 5.5.1 Already authenticated\r\n"
ENCRYPT_FIRST = b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
TOO_MANY = b"421 4.7.0 {host} Too many failed logins\r\n"
PROVIDER_REFUSED = b"421 4.7.0 {host} Provider refused the account's sign-in token\r\n"

_RESULT_REPLY = {
    "bad": BAD_LOGIN,
    "no_account": NO_ACCOUNT,
    "reauth": NO_TOKEN_REAUTH,
    "temp": NO_TOKEN_TEMP,
}


class OAuthSmtpRelay(SmtpRelay):
    """`SmtpRelay` with OAuth2 upstream AUTH; only the base class's subclass hooks are used."""

    def __init__(self, settings: RelaySettings, *, mode: str, account: str = "") -> None:
        super().__init__(settings)
        self.mode = mode  # "account" | "local"
        self.account_name = account
        self._token: LoginResult | None = None
        # local login in progress: (mechanism, step, login name)
        self._login_step: tuple[bytes, str, str | None] | None = None
        self._failures = 0

    def provide_token(self, result: LoginResult) -> None:
        """Account mode: the driver's token (or why there is none), before start()."""
        self._token = result

    # --- account mode: inject AUTH after the provider's EHLO ------------------------
    def _inject_auth(self, caps: Capabilities) -> None:
        result = self._token
        if result is None or not result.ok:
            outcome = result.outcome if result else "temp"
            self._log("error", f"no OAuth2 token for account {self.account_name}: {outcome}")
            self._fatal(_RESULT_REPLY.get(outcome, NO_TOKEN_TEMP))
            return
        self._send_oauth(result)

    def _send_oauth(self, result: LoginResult) -> None:
        # A provider that echoes the AUTH line must not hand the token to the client
        # or the log (proxy/scrub.py).
        self._scrub.add_sasl_response(result.response)
        self._send_upstream(b"AUTH " + result.mechanism + b" " + result.response + b"\r\n")
        self._expect(Step.INJECT_AUTH, b"oauth")

    def _reply_inject_auth(self, p: Pending, reply: Reply) -> None:
        if p.arg not in (b"oauth", b"oauth-error"):
            super()._reply_inject_auth(p, reply)
            return
        if reply.code == 334 and p.arg == b"oauth":
            # RFC 7628 3.2.3: the error challenge is answered with an empty response.
            self._send_upstream(b"\r\n")
            self._expect(Step.INJECT_AUTH, b"oauth-error")
            return
        if reply.code == 235:
            # local mode: from now on like a proxy-authenticated session
            self._upstream_authenticated(owned=self.mode == "local")
            if self.mode == "local":
                self._send_client(AUTH_OK)
            else:
                assert self._caps is not None
                self._answer_greet(self._caps)
            return
        self._log(
            "error",
            f"provider refused the token of account {self.account_name}: {reply.text[:200]}",
        )
        if self.mode == "local":
            self._auth_user = None
            self._send_client(reply.raw)  # the provider's reason (e.g. 535 5.7.139 ...)
        else:
            self._fatal(PROVIDER_REFUSED)

    # --- local mode: EHLO advertises what the local login accepts ---------------------
    def _answer_greet(self, reply: Reply) -> None:
        if self.mode != "local" or self._inject or reply.code != 250 or self._helo_style:
            super()._answer_greet(reply)
            return
        raw = rewrite_ehlo(
            reply,
            offer_starttls=self._settings.client_tls == "starttls" and not self._client_tls,
            offer_auth=False,
            max_size=self._settings.max_message_size,
        )
        if self._client_tls:
            lines = raw.rstrip(b"\r\n").split(b"\r\n")
            lines[-1] = b"250-" + lines[-1][4:]
            raw = b"\r\n".join(lines) + b"\r\n250 AUTH PLAIN LOGIN\r\n"
        self._send_client(raw)

    def _cmd_auth(self, line: bytes) -> None:
        if self.mode != "local":
            super()._cmd_auth(line)
            return
        if self._upstream_authed:
            self._local(ALREADY)
            return
        if not self._client_tls:
            self._local(ENCRYPT_FIRST)
            return
        words = line.split()
        mech = words[1].upper() if len(words) > 1 else b""
        initial = words[2] if len(words) > 2 else None
        if mech == b"PLAIN":
            if initial is not None and initial != b"=":
                self._plain(initial)
            else:
                self._challenge(b"PLAIN", "plain", b"334 \r\n")
        elif mech == b"LOGIN":
            if initial is not None:
                name = decode_b64(initial)
                if name is None:
                    self._local(AUTH_SYNTAX)
                    return
                self._challenge(b"LOGIN", "password", b"334 UGFzc3dvcmQ6\r\n", name)
            else:
                self._challenge(b"LOGIN", "user", b"334 VXNlcm5hbWU6\r\n")
        else:
            self._local(AUTH_MECH)

    def _challenge(self, mech: bytes, step: str, reply: bytes, name: bytes | None = None) -> None:
        login = name.decode("utf-8", "replace") if name is not None else None
        self._login_step = (mech, step, login)
        self._await_auth_response()
        self._send_client(reply)

    def _auth_continuation(self, line: bytes) -> None:
        if self.mode != "local" or self._login_step is None:
            super()._auth_continuation(line)
            return
        mech, step, login = self._login_step
        self._login_step = None
        response = line.strip()
        if response == b"*":
            self._send_client(AUTH_CANCELLED)
            return
        if step == "plain":
            self._plain(response)
            return
        raw = decode_b64(response)
        if raw is None:
            self._send_client(AUTH_SYNTAX)
        elif step == "user":
            self._challenge(b"LOGIN", "password", b"334 UGFzc3dvcmQ6\r\n", raw)
        else:
            self._verify(login or "", raw.decode("utf-8", "replace"))

    def _plain(self, response: bytes) -> None:
        raw = decode_b64(response)
        parts = raw.split(b"\0") if raw is not None else []
        if len(parts) != 3 or not parts[1] or (parts[0] and parts[0] != parts[1]):
            self._local(BAD_LOGIN)
            return
        self._verify(parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace"))

    def _verify(self, login: str, password: str) -> None:
        # A barrier: nothing the client pipelines is parsed until login_result().
        self._expect(Step.INJECT_AUTH, b"verify")
        self._emit(VerifyLogin(login, password))

    def login_result(self, result: LoginResult) -> None:
        """The driver's answer to VerifyLogin (synchronously, before any read)."""
        if self.state is State.CLOSED:
            return
        self._withdraw(Step.INJECT_AUTH)
        if result.ok:
            self._auth_user = result.user
            self._send_oauth(result)
        else:
            self._log("warning", f"local login refused: {result.outcome}")
            self._failures += 1
            if self._failures >= MAX_LOGIN_FAILURES:
                self._fatal(TOO_MANY)
                return
            self._send_client(self._fmt(_RESULT_REPLY.get(result.outcome, BAD_LOGIN)))
        self._resume()

    def _cmd_mail(self, line: bytes) -> None:
        if self.mode == "local" and not self._upstream_authed:
            self._local(AUTH_REQUIRED)
            return
        super()._cmd_mail(line)
