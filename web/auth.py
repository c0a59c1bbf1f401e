"""Who is logging in: a local password (argon2id, archive/logins.py) or an LDAP bind.

`authenticate()` is blocking (argon2, network); the app calls it through
`trio.to_thread`. It returns the mailtee user name and role, or None; it never says why
a login failed (unknown name, wrong password and directory errors look the same to the
person at the login form; the operator finds the reason in the log, without the
password).

Directory users: the login is resolved to a mailtee user (name or address, as for local
logins), the entry whose `name_attr` equals that name is looked up under `base_dn`
(bound as `bind_dn` with `[ldap] bind_password` from secrets.toml, or anonymously), and
the person's password is checked by a simple bind as that entry's DN. Only over TLS:
`ldaps://`, or `ldap://` upgraded with StartTLS; certificates are verified. An empty
password is refused before anything is sent (an LDAP "unauthenticated bind" would
otherwise succeed).
"""

from __future__ import annotations

import logging
import ssl
import warnings
from dataclasses import dataclass

from admin.config import LdapConfig
from archive.catalog import Catalog
from archive.logins import get_role, has_password, resolve_login, verify_password
from web.errors import WebError

log = logging.getLogger("mailtee.web")

MAX_LOGIN_CHARS = 256


@dataclass(frozen=True)
class Identity:
    user: str
    role: str
    via: str  # "local" | "ldap"


def authenticate(
    cat: Catalog,
    login: str,
    password: str,
    ldap: LdapConfig | None,
    ldap_bind_password: str | None,
) -> Identity | None:
    login = login.strip()
    if not login or not password or len(login) > MAX_LOGIN_CHARS:
        return None
    name = resolve_login(cat, login)
    if name is None:
        verify_password(cat, "", password)  # same cost as a real check
        return None
    if has_password(cat, name):
        if verify_password(cat, name, password):
            return Identity(name, get_role(cat, name), "local")
        return None
    if ldap is not None and ldap_bind(ldap, ldap_bind_password, name, password):
        return Identity(name, get_role(cat, name), "ldap")
    return None


def _escape_filter(value: str) -> str:
    """RFC 4515 3: escape a value for use inside an LDAP filter."""
    out = []
    for ch in value:
        if ch in "*()\\\x00":
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def ldap_bind(cfg: LdapConfig, bind_password: str | None, name: str, password: str) -> bool:
    """True when `password` binds as the directory entry of user `name`."""
    if not password:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import ldap3
        from ldap3.core.exceptions import LDAPException

    tls = ldap3.Tls(
        validate=ssl.CERT_REQUIRED,
        version=ssl.PROTOCOL_TLS_CLIENT,
        ca_certs_file=cfg.ca_file or None,
    )
    use_ssl = cfg.url.startswith("ldaps://")
    server = ldap3.Server(
        cfg.url, use_ssl=use_ssl, tls=tls, get_info=ldap3.NONE, connect_timeout=cfg.timeout
    )

    def connect(user: str | None, secret: str | None) -> ldap3.Connection:
        conn = ldap3.Connection(
            server,
            user=user,
            password=secret,
            auto_bind=ldap3.AUTO_BIND_NONE,
            receive_timeout=int(cfg.timeout),
            raise_exceptions=False,
            read_only=True,
        )
        conn.open()
        if not use_ssl:
            if not cfg.start_tls:
                raise _Refused("ldap:// without start_tls: passwords would cross in clear")
            if not conn.start_tls():
                raise _Refused("StartTLS failed")
        return conn

    search = person = None
    try:
        search = connect(cfg.bind_dn, bind_password if cfg.bind_dn else None)
        if not search.bind():
            raise _Refused(f"cannot bind as {cfg.bind_dn or 'anonymous'} to look users up")
        flt = f"(&{cfg.filter}({cfg.name_attr}={_escape_filter(name)}))"
        search.search(cfg.base_dn, flt, search_scope=ldap3.SUBTREE, attributes=[], size_limit=2)
        entries = [e for e in search.response or [] if e.get("type") == "searchResEntry"]
        if len(entries) != 1:
            log.info("web login: %d directory entries for user %r", len(entries), name)
            return False
        person = connect(entries[0]["dn"], password)
        return bool(person.bind())
    except (_Refused, LDAPException, OSError, ssl.SSLError) as e:
        log.warning("web login: directory %s: %s", cfg.url, str(e).splitlines()[0][:200])
        return False
    finally:
        for conn in (person, search):
            if conn is not None:
                try:
                    conn.unbind()
                except Exception:
                    pass


class _Refused(WebError):
    pass
