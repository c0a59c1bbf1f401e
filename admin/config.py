"""The configuration model: `config.toml` + `secrets.toml` <-> pydantic objects.

Why two files: config.toml is meant to be read, diffed, backed up and pasted into a
support ticket; passwords therefore live only in `secrets.toml` (mode 0600) beside it.
Every loader error is a `ConfigError` whose message is one line naming the bad key, so
the CLI can print it without a traceback (exit 2).
"""

from __future__ import annotations

import ipaddress
import re
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from admin.config_keys import DEFAULT_STATE_DIR, ConfigError, read_toml
from admin.paths import (  # noqa: F401 - re-exported: the path rules live in admin.paths
    DEFAULT_CONFIG_PATH,
    SECRETS_FILE_NAME,
    resolve_config_path,
    secrets_path,
    state_dir,
)
from archive.durable import write_atomic
from proxy.settings import TlsMode  # the one definition; the relay settings carry it

#: Loopback, RFC 1918 and ULA: the networks a small office's clients come from.
DEFAULT_ALLOW_CLIENTS = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
]

#: Listener names become part of report file names and log lines: keep them tame.
LISTENER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")

#: smtp-journal: receive-only journal listener (archive/pull/journal.py), no target
Protocol = Literal["smtp", "pop3", "smtp-journal"]


def _stls_alias(v: object) -> object:
    # POP3 people say "stls"; accept it as the same thing as starttls.
    return "starttls" if v == "stls" else v


def _ip_address(v: str) -> str:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise ValueError(f"{v!r} is not an IP address") from None
    return v


def _safe_name(v: str) -> str:
    if not LISTENER_NAME_RE.match(v):
        raise ValueError("must be 1-32 characters of letters, digits, '-' or '_'")
    return v


#: a TLS mode as configured ("stls" accepted for starttls)
TlsSetting = Annotated[TlsMode, BeforeValidator(_stls_alias)]
#: a listener, account or mailbox name: safe in file names, TOML keys and log lines
SafeName = Annotated[str, AfterValidator(_safe_name)]
Port = Annotated[int, Field(ge=1, le=65535)]
#: an address to listen on (a listener's, the web side's): an IP address, not a name
IpAddress = Annotated[str, AfterValidator(_ip_address)]

DEFAULT_PORTS = {
    ("smtp", False): 25,
    ("smtp", True): 465,
    ("pop3", False): 110,
    ("pop3", True): 995,
}


def default_port(protocol: str, implicit_tls: bool) -> int:
    return DEFAULT_PORTS[("smtp" if protocol == "smtp-journal" else protocol, implicit_tls)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ListenerConfig(_Model):
    """One `[[listener]]`: where clients connect and which provider it relays to."""

    name: SafeName
    protocol: Protocol
    listen: IpAddress = "0.0.0.0"
    #: 0 = any free port (tests); the bound port is reported by the service
    port: Annotated[int, Field(ge=0, le=65535)] | None = None
    client_tls: TlsSetting = "none"
    target_host: str = ""
    target_port: Port | None = None
    target_tls: TlsSetting = "none"
    target_verify: bool = True
    target_ca: str | None = None
    target_user: str | None = None
    #: OAuth2: authenticate upstream as this `[[account]]` (accounts/); see DESIGN
    target_account: str | None = None
    #: clients log in to mailtee with a local user's password (per-person accounts; on an
    #: smtp-journal listener: AUTH required);
    #: None (unset) is false and keeps config.toml and `--json` output of other listeners
    local_login: bool | None = None

    @model_validator(mode="after")
    def _fill_ports(self) -> ListenerConfig:
        if self.port is None:
            self.port = default_port(self.protocol, self.client_tls == "implicit")
        if self.target_port is None:
            self.target_port = default_port(self.protocol, self.target_tls == "implicit")
        if self.target_user is not None and self.protocol != "smtp":
            raise ValueError("target_user is only for smtp listeners")
        if self.target_user is not None and (self.target_account or self.local_login):
            raise ValueError(
                "OAuth2 (target_account, local_login) and a target user with a password "
                "exclude each other"
            )
        logs_in = self.local_login or (self.target_account and self.protocol == "pop3")
        if logs_in and self.client_tls == "none":
            raise ValueError(
                "local logins need client_tls = starttls or implicit (passwords only over TLS)"
            )
        if self.protocol == "smtp-journal":
            if self.target_host or self.target_user:
                raise ValueError("an smtp-journal listener receives mail; it has no target")
        elif not self.target_host:
            raise ValueError("target_host is required (the provider's server)")
        return self

    @property
    def bind_port(self) -> int:
        assert self.port is not None
        return self.port

    @property
    def upstream_port(self) -> int:
        assert self.target_port is not None
        return self.target_port


class Limits(_Model):
    """Caps on everything a client or upstream controls (DESIGN invariant 6)."""

    max_connections: int = Field(default=500, ge=1)
    max_message_size: int = Field(default=100 * 1024 * 1024, ge=1024)
    idle_timeout: float = Field(default=300.0, gt=0)  # RFC 5321 4.5.3.2.7: 5 minutes
    upstream_timeout: float = Field(default=600.0, gt=0)  # RFC 5321 4.5.3.2.6: 10 minutes
    connect_timeout: float = Field(default=30.0, gt=0)
    max_line_length: int = Field(default=2048, ge=512)  # RFC 5321 4.5.3.1.4 minimum 512
    max_commands: int = Field(default=10_000, ge=10)
    #: bytes/s a message must stream at (client DATA, provider RETR/TOP bodies), averaged
    #: over each DATA_RATE_WINDOW (60 s); 0 = no minimum. Against DATA slowloris.
    min_data_rate: int = Field(default=256, ge=0)
    #: seconds one session may last in all; 0 = unlimited
    max_session_time: float = Field(default=7200.0, ge=0)


class DemoConfig(_Model):
    """The built-in demo provider started by `run` (for `make run` and offline trials)."""

    enabled: bool = False
    smtp_port: Port = 2526
    pop3_port: Port = 2111


class AlertsConfig(_Model):
    """`[alerts]`: who hears about archive/verify failures and low disk, and through which relay.

    Alerts are always logged; they are also mailed when `smtp_host` and `to` are set.
    """

    #: the SMTP relay that delivers alert mail ("" = log only)
    smtp_host: str = ""
    smtp_port: Port = 25
    smtp_tls: TlsSetting = "none"
    smtp_verify: bool = True
    smtp_timeout: float = Field(default=30.0, gt=0)
    #: envelope and header sender; "" = mailtee@<hostname>
    from_address: str = Field(default="", alias="from")
    to: list[str] = Field(default_factory=list)
    #: alert when the state directory's file system has less free space than this
    low_disk_mb: int = Field(default=1024, ge=0)
    #: at most one mail per kind of alert in this many seconds; the rest are counted
    min_interval: float = Field(default=900.0, ge=0)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for addr in v:
            if "@" not in addr or any(c in addr for c in " \r\n<>,"):
                raise ValueError(f"{addr!r} is not a mail address")
        return v

    @property
    def mail_enabled(self) -> bool:
        return bool(self.smtp_host and self.to)


class AccountConfig(_Model):
    """One `[[account]]`: an OAuth2 mailbox account (accounts/ has the flows and tokens).

    Secrets (client secret, encrypted refresh token) are never here: the client secret is
    in secrets.toml, the tokens in the 0600 token store beside it.
    """

    name: SafeName
    provider: Literal["microsoft", "google", "generic"]
    email: str
    flow: Literal["device", "auth-code", "client-credentials"] | None = None
    tenant: str | None = None
    client_id: str = ""
    authorize_url: str | None = None
    token_url: str | None = None
    device_url: str | None = None
    scopes: list[str] = Field(default_factory=list)
    redirect_uri: str | None = None
    #: CA bundle for the provider's HTTPS endpoints (None = the system's)
    ca: str | None = None
    #: "secrets": the token key is in secrets.toml (listener accounts); "password": derived
    #: from the local password of the user who owns `email` (per-person accounts)
    protect: Literal["secrets", "password"] = "secrets"
    #: upstream SASL mechanism
    sasl: Literal["xoauth2", "oauthbearer"] = "xoauth2"

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        if "@" not in v or any(c in v for c in " \r\n<>,\x00\x01"):
            raise ValueError(f"{v!r} is not a mail address")
        return v


MailboxProtocol = Literal["imap", "pop3"]
#: IMAP 143/993 (RFC 9051), POP3 110/995 (RFC 1939, RFC 8314)
MAILBOX_DEFAULT_PORTS = {
    ("imap", False): 143,
    ("imap", True): 993,
    ("pop3", False): 110,
    ("pop3", True): 995,
}
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | float | int) -> float:
    """`90`, `90s`, `15m`, `1h`, `1d` -> seconds; ValueError with a one-line reason."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(value.strip().lower())
        if m is None:
            raise ValueError(f"{value!r} is not a duration like 90s, 15m, 1h or 1d")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds < 60:
        raise ValueError(f"{value!r}: the shortest pull interval is 1 minute")
    return seconds


#: why a mailbox cannot pull with a per-person account (config load, `mailbox add/set`)
MAILBOX_LOCKED_ACCOUNT = (
    "mailbox {0!r}: account {1!r} is locked by its owner's local password (a per-person "
    "account); a mailbox pulls without anyone logged in, so it needs an account signed "
    "in without --password-stdin"
)


class MailboxConfig(_Model):
    """One `[[mailbox]]`: an IMAP or POP3 mailbox whose mail `proxy-admin pull` archives.

    The password lives in secrets.toml (`[mailbox.NAME] password`), or `account` names
    an `[[account]]` whose OAuth2 token logs in (SASL XOAUTH2). See docs/mailboxes.md.
    """

    name: SafeName
    protocol: MailboxProtocol
    server: str
    port: Port | None = None
    tls: TlsSetting = "implicit"
    #: verify the server's certificate (against `ca`, or the system's CAs)
    verify: bool = True
    ca: str | None = None
    user: str
    #: log in with this `[[account]]`'s OAuth2 access token (XOAUTH2) instead of a password
    account: SafeName | None = None
    #: IMAP folders to archive (with their subfolders); empty = all folders
    folders: list[str] = Field(default_factory=list)
    exclude_folders: list[str] = Field(default_factory=list)
    #: the archive user who owns everything pulled from this mailbox (optional)
    archive_user: str | None = None
    #: a catch-all mailbox: owners are recovered from the headers (docs/mailboxes.md)
    multidrop: bool = False
    #: pull from `proxy-admin run` this often (a duration: 15m, 1h); unset = never
    interval: str | None = None
    #: delete at the source mail older than N days once archived and verified; unset = never
    delete_after_days: int | None = Field(default=None, ge=1)

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @model_validator(mode="after")
    def _fill_port(self) -> MailboxConfig:
        if self.port is None:
            self.port = MAILBOX_DEFAULT_PORTS[(self.protocol, self.tls == "implicit")]
        if self.protocol == "pop3" and (self.folders or self.exclude_folders):
            raise ValueError("folders and exclude_folders are only for imap mailboxes")
        return self

    @property
    def interval_seconds(self) -> float | None:
        return None if self.interval is None else parse_duration(self.interval)


class WebConfig(_Model):
    """`[web]`: browser access to the archive over HTTPS (web/, docs/web.md)."""

    enabled: bool = False
    listen: IpAddress = "0.0.0.0"
    #: 0 = any free port (tests); the bound port is logged
    port: Annotated[int, Field(ge=0, le=65535)] = 8443
    #: a session ends this long after login, however active (seconds)
    session_lifetime: float = Field(default=8 * 3600.0, gt=0)
    #: ... and after this long without a request
    session_idle: float = Field(default=30 * 60.0, gt=0)
    #: dates are shown in this IANA zone ("" = the browser's zone, UTC without JavaScript)
    time_zone: str = ""
    #: failed logins per account / per client address within `throttle_window` before
    #: further attempts are refused until the window has passed
    max_failures: int = Field(default=5, ge=1)
    throttle_window: float = Field(default=900.0, gt=0)
    #: log in with an LDAP bind against `[ldap]` (the `user sync-ldap` directory)
    ldap_login: bool = True
    #: web worker processes `run` starts; they share the port (SO_REUSEPORT) and the
    #: session store
    workers: int = Field(default=2, ge=1, le=16)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        if v:
            import zoneinfo

            try:
                zoneinfo.ZoneInfo(v)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{v!r} is not a time zone (e.g. Asia/Tokyo)") from None
        return v


class LdapConfig(_Model):
    """`[ldap]`: the directory users log in against on the web side (an LDAP bind).

    The same server `proxy-admin user sync-ldap` reads. The bind password of `bind_dn`
    (used to look the person's entry up) is `[ldap] bind_password` in secrets.toml.
    """

    url: str
    base_dn: str
    bind_dn: str | None = None
    #: attribute holding the user name mailtee knows the person by (AD: sAMAccountName)
    name_attr: str = "uid"
    filter: str = "(|(objectClass=inetOrgPerson)(objectClass=user))"
    #: upgrade an ldap:// connection with StartTLS (ldaps:// is TLS from the start)
    start_tls: bool = True
    #: CA bundle for the directory's certificate ("" = the system's)
    ca_file: str = ""
    timeout: float = Field(default=10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("ldap://", "ldaps://")):
            raise ValueError("must start with ldap:// or ldaps://")
        return v


class Config(_Model):
    hostname: str = "mailtee.localdomain"
    state_dir: str = DEFAULT_STATE_DIR
    on_archive_failure: Literal["reject", "pass"] = "reject"
    allow_clients: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOW_CLIENTS))
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    limits: Limits = Field(default_factory=Limits)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    ldap: LdapConfig | None = None
    listener: list[ListenerConfig] = Field(default_factory=list)
    account: list[AccountConfig] = Field(default_factory=list)
    mailbox: list[MailboxConfig] = Field(default_factory=list)
    #: worker processes sharing the listeners; 0 = one per CPU core (proxy/workers.py)
    workers: int = Field(default=0, ge=0, le=256)
    #: remove report pairs this long after they are archived ("0" = at once, "7d")
    report_retention: str = "5m"

    @field_validator("report_retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        from archive.retention import parse_duration

        parse_duration(v)
        return v

    @field_validator("allow_clients")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a network (e.g. 192.168.0.0/16)") from None
        return v

    @field_validator("hostname")
    @classmethod
    def _hostname_is_dns(cls, v: str) -> str:
        # It goes into EHLO, every reply line and the certificate: a CR/LF here would
        # split protocol lines (reply injection), anything else non-DNS breaks clients.
        if not is_dns_name(v):
            raise ValueError(
                f"{v!r} is not a host name (letters, digits, '-' in dot-separated labels)"
            )
        return v

    @model_validator(mode="after")
    def _unique_listeners(self) -> Config:
        seen: set[str] = set()
        for lst in self.listener:
            if lst.name in seen:
                raise ValueError(f"listener name {lst.name!r} is used twice")
            seen.add(lst.name)
        for i, a in enumerate(self.listener):
            for b in self.listener[:i]:
                if binds_clash(a, b):
                    raise ValueError(
                        f"listeners {b.name!r} and {a.name!r} both listen on "
                        f"{a.listen} port {a.port}"
                        + ("" if a.listen == b.listen else f" ({b.listen} covers it)")
                    )
        accounts = {a.name for a in self.account}
        if len(accounts) != len(self.account):
            raise ValueError("an account name is used twice")
        for lst in self.listener:
            if lst.target_account is not None and lst.target_account not in accounts:
                raise ValueError(f"listener {lst.name!r}: no account named {lst.target_account!r}")
        boxes: set[str] = set()
        for box in self.mailbox:
            if box.name in boxes:
                raise ValueError(f"mailbox name {box.name!r} is used twice")
            boxes.add(box.name)
            if problem := self.mailbox_account_problem(box):
                raise ValueError(problem)
        return self

    def mailbox_account_problem(self, box: MailboxConfig) -> str | None:
        """Why `box` cannot log in with its `account` (None: it can, or it has none).
        The one check for config load and `proxy-admin mailbox add/set --account`."""
        if box.account is None:
            return None
        account = next((a for a in self.account if a.name == box.account), None)
        if account is None:
            return f"mailbox {box.name!r}: no account named {box.account!r}"
        if account.protect == "password":
            return MAILBOX_LOCKED_ACCOUNT.format(box.name, box.account)
        return None

    def get_account(self, name: str) -> AccountConfig:
        for acc in self.account:
            if acc.name == name:
                return acc
        raise ConfigError(f"no account named {name!r}")

    def get_mailbox(self, name: str) -> MailboxConfig:
        for box in self.mailbox:
            if box.name == name:
                return box
        raise ConfigError(f"no mailbox named {name!r} (see `proxy-admin mailbox list`)")

    def get_listener(self, name: str) -> ListenerConfig:
        for lst in self.listener:
            if lst.name == name:
                return lst
        raise ConfigError(f"no listener named {name!r}")

    def allowed_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.allow_clients]


_DNS_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def is_dns_name(name: str) -> bool:
    """RFC 1123 host name: dot-separated labels of letters, digits and inner '-'."""
    if not name or len(name) > 253:
        return False
    return all(_DNS_LABEL_RE.match(label) for label in name.removesuffix(".").split("."))


def binds_clash(a: ListenerConfig, b: ListenerConfig) -> bool:
    """Would the two listeners fight over one address:port? (port 0 = any free port)"""
    if a.port != b.port or not a.port:
        return False
    ia, ib = ipaddress.ip_address(a.listen), ipaddress.ip_address(b.listen)
    if ia == ib:
        return True
    if ia.version != ib.version:
        return False
    return ia.is_unspecified or ib.is_unspecified  # 0.0.0.0 / :: take every address


class Secrets(_Model):
    """Contents of secrets.toml: `[listener.NAME] target_password = "..."`."""

    listener: dict[str, dict[str, str]] = Field(default_factory=dict)
    #: `[ldap] bind_password = "..."` for `proxy-admin user sync-ldap`
    ldap: dict[str, str] = Field(default_factory=dict)
    #: `[account.NAME] client_secret = "..."`; `[accounts] key = "..."` (token store key)
    account: dict[str, dict[str, str]] = Field(default_factory=dict)
    accounts: dict[str, str] = Field(default_factory=dict)
    #: `[mailbox.NAME] password = "..."` for `proxy-admin pull`
    mailbox: dict[str, dict[str, str]] = Field(default_factory=dict)

    def mailbox_password(self, name: str) -> str | None:
        return self.mailbox.get(name, {}).get("password")

    def target_password(self, name: str) -> str | None:
        return self.listener.get(name, {}).get("target_password")

    def __repr__(self) -> str:  # never let a password reach a log via repr()
        return (
            f"Secrets(<{len(self.listener)} listener entries, {len(self.mailbox)} mailbox "
            f"entries, ldap: {bool(self.ldap)} hidden>)"
        )

    __str__ = __repr__


# --- load / save --------------------------------------------------------------------


def _describe(err: ValidationError, prefix: str = "") -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "config"
    return f"{where}: {msg}"


def parse_config(data: dict, source: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {_describe(e)}") from None


def load_config(path: Path) -> Config:
    # the file checks (missing, not TOML, empty, a password) are admin.config_keys's,
    # shared with the quick state_dir reader of `search`
    return parse_config(read_toml(path), str(path))


def load_secrets(config_path: Path, *, strict_mode: bool = True) -> Secrets:
    """Read secrets.toml; refuse it when group/world can read it (strict_mode)."""
    path = secrets_path(config_path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return Secrets()
    if strict_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path}: permissions {stat.S_IMODE(st.st_mode):04o} are too open; "
            f"run `chmod 600 {path}`"
        )
    try:
        data = tomllib.loads(path.read_text("utf-8"))
        return Secrets.model_validate(data)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        # Do not echo the parser's message: it may quote a password.
        raise ConfigError(f"{path}: not valid TOML") from None
    except ValidationError as e:
        raise ConfigError(f"{path}: {_describe(e)}") from None


def config_to_dict(config: Config) -> dict:
    data = config.model_dump(mode="json", exclude_none=True, by_alias=True)
    if not data.get("listener"):
        # `listener = []` would make a hand-appended `[[listener]]` invalid TOML.
        data.pop("listener", None)
    if not data.get("account"):
        data.pop("account", None)
    if not data.get("mailbox"):
        data.pop("mailbox", None)
    for lst in data.get("listener", []):
        if not lst.get("local_login"):
            lst.pop("local_login", None)  # the default: keep config.toml short
    return data


def save_config(config: Config, path: Path) -> None:
    """Write config.toml (no secrets in it: 0644 when new) keeping an existing file's
    mode, so a config kept inside the state dir (`make run`'s var/) stays 0640."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    write_atomic(path, tomli_w.dumps(config_to_dict(config)).encode(), mode)


def save_secrets(secrets: Secrets, config_path: Path) -> None:
    data = secrets.model_dump(mode="json")
    if not data["ldap"]:
        del data["ldap"]  # only written once someone stores an LDAP password
    for key in ("account", "accounts"):
        if not data[key]:
            del data[key]
    if not data["mailbox"]:
        del data["mailbox"]
    write_atomic(secrets_path(config_path), tomli_w.dumps(data).encode(), 0o600)


def check_secrets(config: Config, secrets: Secrets) -> None:
    """Raise ConfigError unless every listener with a `target_user` has its password."""
    for lst in config.listener:
        if lst.target_user is not None and not secrets.target_password(lst.name):
            raise ConfigError(
                f"listener {lst.name!r}: target_user is set but {SECRETS_FILE_NAME} has no "
                f"target_password for it (set one with `proxy-admin listener set "
                f"{lst.name} --target-password-stdin`)"
            )
