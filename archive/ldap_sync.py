"""Mirror users from a directory (OpenLDAP, Active Directory) with ldap3.

Each entry matched by `filter` under `base_dn` becomes a user named by `name_attr` (uid;
sAMAccountName on AD) with every address of the `mail_attrs` (several `mail` values are
normal; AD's `proxyAddresses` holds "SMTP:primary" and "smtp:alias" plus non-mail types
such as "X500:..." which are skipped). Sync is idempotent: users it finds are created or
updated to match, users it created earlier (source "ldap") that are gone are removed;
manual and CSV users are never touched. A search that finds nobody removes nobody.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from archive.errors import ArchiveError
from archive.errtext import describe

from .catalog import Catalog
from .users import ImportResult, UserError, UserSpec, apply_specs, check_address, check_name

PAGE_SIZE = 500


class LdapSyncError(ArchiveError):
    """The directory could not be read; one line, never containing the password."""


@dataclass
class LdapSettings:
    url: str
    base_dn: str
    bind_dn: str | None = None
    password: str | None = field(default=None, repr=False)
    filter: str = "(|(objectClass=inetOrgPerson)(objectClass=user))"
    name_attr: str = "uid"
    mail_attrs: tuple[str, ...] = ("mail",)
    display_attr: str | None = "cn"
    pop3_attr: str | None = None
    timeout: float = 10.0


def mail_values(attr: str, values: list[object]) -> list[str]:
    out = []
    for v in values:
        s = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        s = s.strip()
        if attr.lower() == "proxyaddresses" or (":" in s.split("@")[0] and "@" in s):
            prefix, _, rest = s.partition(":")
            if prefix.lower() != "smtp":
                continue
            s = rest
        if s:
            out.append(s)
    return out


def _first(entry: dict[str, list[object]], attr: str | None) -> str | None:
    if not attr:
        return None
    for key, values in entry.items():
        if key.lower() == attr.lower() and values:
            v = values[0]
            return (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)).strip()
    return None


def _all(entry: dict[str, list[object]], attr: str) -> list[object]:
    for key, values in entry.items():
        if key.lower() == attr.lower():
            return list(values)
    return []


def fetch(settings: LdapSettings) -> tuple[list[UserSpec], list[str]]:
    """Read the directory: user specs and one problem line per unusable entry."""
    with warnings.catch_warnings():
        # ldap3 2.9 uses pyasn1 names that newer pyasn1 deprecates, at import time
        warnings.simplefilter("ignore", DeprecationWarning)
        import ldap3
        from ldap3.core.exceptions import LDAPException

    attrs = [settings.name_attr, *settings.mail_attrs]
    for extra in (settings.display_attr, settings.pop3_attr):
        if extra:
            attrs.append(extra)
    server = ldap3.Server(settings.url, get_info=ldap3.NONE, connect_timeout=settings.timeout)
    conn = ldap3.Connection(
        server,
        user=settings.bind_dn,
        password=settings.password,
        auto_bind=ldap3.AUTO_BIND_NONE,
        receive_timeout=int(settings.timeout),
        raise_exceptions=True,
        read_only=True,
    )
    try:
        conn.open()
        conn.bind()
    except LDAPException as e:
        _close(conn)
        raise LdapSyncError(f"{settings.url}: cannot bind: {describe(e, limit=200)}") from None
    specs: list[UserSpec] = []
    problems: list[str] = []
    try:
        entries = conn.extend.standard.paged_search(
            settings.base_dn,
            settings.filter,
            search_scope=ldap3.SUBTREE,
            attributes=attrs,
            paged_size=PAGE_SIZE,
            generator=True,
        )
        seen: set[str] = set()
        for entry in entries:
            if entry.get("type") != "searchResEntry":
                continue
            dn = entry.get("dn", "?")
            raw = entry.get("raw_attributes") or {}
            try:
                name = check_name(_first(raw, settings.name_attr) or "")
                addrs = []
                for attr in settings.mail_attrs:
                    addrs += [check_address(a) for a in mail_values(attr, _all(raw, attr))]
                if not addrs:
                    raise UserError("no mail address")
                if name in seen:
                    raise UserError(f"user name {name!r} is used by another entry")
            except UserError as err:
                problems.append(f"{dn}: {err}")
                continue
            seen.add(name)
            accounts = []
            if settings.pop3_attr:
                accounts = [str(v) for v in mail_values("", _all(raw, settings.pop3_attr))]
            specs.append(UserSpec(name, addrs, _first(raw, settings.display_attr), accounts))
    except LDAPException as e:
        raise LdapSyncError(f"{settings.url}: search failed: {describe(e, limit=200)}") from None
    finally:
        _close(conn)
    return specs, problems


def _close(conn: object) -> None:
    try:
        conn.unbind()  # type: ignore[attr-defined]
    except Exception:
        pass
    strategy = getattr(conn, "strategy", None)
    sock = getattr(strategy, "connection", None) and getattr(conn, "socket", None)
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def sync(cat: Catalog, settings: LdapSettings, *, prune: bool = True) -> ImportResult:
    specs, problems = fetch(settings)
    result = ImportResult(errors=problems)
    apply_specs(cat, specs, "ldap", result)
    if prune and specs:
        found = {s.name for s in specs}
        with cat.transaction() as conn:
            for row in conn.execute("SELECT id, name FROM users WHERE source = 'ldap'").fetchall():
                if row["name"] not in found:
                    for table in ("ownership", "user_identities"):
                        conn.execute(f"DELETE FROM {table} WHERE user = ?", (row["id"],))
                    conn.execute("DELETE FROM users WHERE id = ?", (row["id"],))
                    result.removed += 1
    cat.audit(
        "user.sync-ldap",
        {"url": settings.url, "base_dn": settings.base_dn, **result.as_dict()},
    )
    return result
