"""Users and their identities (addresses, POP3 accounts): manual, CSV and LDAP sources.

A message belongs to every user one of whose addresses appears in its From/To/Cc/Bcc
headers or its SMTP envelope (MAIL FROM, RCPT TO incl. BCC), and to every user whose
address or POP3 account retrieved it. Identities are stored lower-cased. Every change
recomputes that user's ownership rows and is written to the audit log.

CSV format (header row required; UTF-8, optional BOM; `,` separated):
    name,email,display_name,pop3_account
`name` and `email` are required; `email` and `pop3_account` may hold several values
separated by `;` or spaces. A re-import replaces the identities of the users it names
(idempotent); users it does not name are left alone.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archive.errors import ArchiveError

from .catalog import Catalog, now_iso

NAME_RE = re.compile(r"^[^\s/\\:]{1,128}$")
EMAIL_RE = re.compile(r"^[^@\s<>(),;:\"]+@[^@\s<>(),;:\"]+\.[^@\s<>(),;:\"]+$")
CSV_COLUMNS = ("name", "email", "display_name", "pop3_account")


class UserError(ArchiveError, ValueError):
    """A user operation was refused; the message is one line."""


@dataclass
class UserSpec:
    name: str
    addresses: list[str]
    display_name: str | None = None
    pop3_accounts: list[str] = field(default_factory=list)


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UserError(f"{name!r} is not a valid user name (no spaces, '/', '\\' or ':')")
    return name


def check_address(addr: str) -> str:
    addr = addr.strip().strip("<>").lower()
    if not EMAIL_RE.match(addr):
        raise UserError(f"{addr!r} is not an email address")
    return addr


def _split_values(value: str | None) -> list[str]:
    return [v for v in re.split(r"[;\s]+", value or "") if v]


def upsert_user(cat: Catalog, spec: UserSpec, source: str, *, replace: bool = True) -> bool:
    """Create or update a user; returns True if anything changed."""
    check_name(spec.name)
    addrs = sorted({check_address(a) for a in spec.addresses})
    accounts = sorted({a.strip().lower() for a in spec.pop3_accounts if a.strip()})
    wanted = {("address", a) for a in addrs} | {("pop3", a) for a in accounts}
    now = now_iso()
    with cat.transaction() as conn:
        row = conn.execute("SELECT * FROM users WHERE name = ?", (spec.name,)).fetchone()
        if row is None:
            cur = conn.execute(
                "INSERT INTO users(name, display_name, source, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (spec.name, spec.display_name, source, now, now),
            )
            uid = cur.lastrowid
            have: set[tuple[str, str]] = set()
            changed = True
        else:
            uid = row["id"]
            have = {
                (r["kind"], r["value"])
                for r in conn.execute(
                    "SELECT kind, value FROM user_identities WHERE user = ?", (uid,)
                )
            }
            display = spec.display_name if spec.display_name is not None else row["display_name"]
            changed = display != row["display_name"] or source != row["source"]
            if changed:
                conn.execute(
                    "UPDATE users SET display_name = ?, source = ?, updated_at = ? WHERE id = ?",
                    (display, source, now, uid),
                )
        target = wanted if replace else wanted | have
        if target != have:
            changed = True
            conn.execute("DELETE FROM user_identities WHERE user = ?", (uid,))
            conn.executemany(
                "INSERT INTO user_identities(user, kind, value) VALUES (?, ?, ?)",
                [(uid, k, v) for k, v in sorted(target)],
            )
            cat.refresh_ownership(conn, user=uid)
    return changed


def add_user(cat: Catalog, spec: UserSpec) -> None:
    if not spec.addresses and not spec.pop3_accounts:
        raise UserError("give at least one --email or --pop3-account")
    if cat.one("SELECT 1 FROM users WHERE name = ?", (spec.name,)):
        raise UserError(f"user {spec.name!r} already exists")
    upsert_user(cat, spec, "manual")
    cat.audit("user.add", {"name": spec.name, "addresses": spec.addresses})


def remove_user(cat: Catalog, name: str) -> None:
    with cat.transaction() as conn:
        row = conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UserError(f"no user named {name!r}")
        for table in ("ownership", "user_identities", "logins"):
            conn.execute(f"DELETE FROM {table} WHERE user = ?", (row["id"],))
        conn.execute("DELETE FROM users WHERE id = ?", (row["id"],))
    cat.audit("user.remove", {"name": name})


def list_users(cat: Catalog) -> list[dict[str, Any]]:
    users = []
    for u in cat.query(
        "SELECT u.*, l.role AS role, l.password_hash IS NOT NULL AS has_password "
        "FROM users u LEFT JOIN logins l ON l.user = u.id ORDER BY u.name"
    ):
        ids = cat.query(
            "SELECT kind, value FROM user_identities WHERE user = ? ORDER BY kind, value",
            (u["id"],),
        )
        count = cat.one("SELECT COUNT(*) FROM ownership WHERE user = ?", (u["id"],))[0]  # type: ignore[index]
        users.append(
            {
                "name": u["name"],
                "display_name": u["display_name"],
                "source": u["source"],
                "addresses": [r["value"] for r in ids if r["kind"] == "address"],
                "pop3_accounts": [r["value"] for r in ids if r["kind"] == "pop3"],
                "messages": count,
                "role": u["role"] or "user",
                "local_password": bool(u["has_password"]),
            }
        )
    return users


@dataclass
class ImportResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    errors: list[str] = field(default_factory=list)  # "line N: reason"

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "errors": list(self.errors),
        }


def parse_csv(text: str) -> tuple[list[tuple[int, UserSpec]], list[str]]:
    """Good rows (with their line numbers) and one error per bad row."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    missing = [c for c in ("name", "email") if c not in fields]
    if missing:
        raise UserError(
            f"CSV header must name the columns {', '.join(CSV_COLUMNS)} "
            f"(missing: {', '.join(missing)})"
        )
    reader.fieldnames = fields
    good, errors, seen = [], [], set()
    for row in reader:
        line = reader.line_num
        try:
            if None in row:
                raise UserError("too many fields")
            name = check_name((row.get("name") or "").strip())
            if name in seen:
                raise UserError(f"user {name!r} appears twice")
            addrs = [check_address(a) for a in _split_values(row.get("email"))]
            if not addrs:
                raise UserError("no email address")
            display = (row.get("display_name") or "").strip() or None
            accounts = _split_values(row.get("pop3_account"))
        except UserError as e:
            errors.append(f"line {line}: {e}")
            continue
        seen.add(name)
        good.append((line, UserSpec(name, addrs, display, accounts)))
    return good, errors


def import_csv(cat: Catalog, path: Path) -> ImportResult:
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    good, errors = parse_csv(text)
    result = ImportResult(errors=errors)
    apply_specs(cat, (s for _, s in good), "csv", result)
    cat.audit("user.import-csv", {"file": str(path), **result.as_dict()})
    return result


def apply_specs(cat: Catalog, specs: Iterable[UserSpec], source: str, result: ImportResult) -> None:
    for spec in specs:
        existed = cat.one("SELECT 1 FROM users WHERE name = ?", (spec.name,)) is not None
        changed = upsert_user(cat, spec, source)
        if not existed:
            result.added += 1
        elif changed:
            result.updated += 1
        else:
            result.unchanged += 1


def edit_user(
    cat: Catalog,
    name: str,
    *,
    add_addresses: Iterable[str] = (),
    remove_addresses: Iterable[str] = (),
    add_pop3: Iterable[str] = (),
    remove_pop3: Iterable[str] = (),
    display_name: str | None = None,
) -> dict[str, Any]:
    """Add/remove addresses and POP3 accounts of an existing user (`user set`).

    Ownership follows at once (the catalog re-derives it). Removing something the user
    does not have, or leaving the user with neither an address nor a POP3 account, is a
    UserError. Returns the user's identities and source afterwards.
    """
    row = cat.one("SELECT * FROM users WHERE name = ?", (name,))
    if row is None:
        raise UserError(f"no user named {name!r}")
    ids = cat.query("SELECT kind, value FROM user_identities WHERE user = ?", (row["id"],))
    addrs = {r["value"] for r in ids if r["kind"] == "address"}
    accounts = {r["value"] for r in ids if r["kind"] == "pop3"}
    for what, have, gone in (
        ("address", addrs, [check_address(a) for a in remove_addresses]),
        ("POP3 account", accounts, [a.strip().lower() for a in remove_pop3]),
    ):
        for value in gone:
            if value not in have:
                raise UserError(f"user {name!r} has no {what} {value!r}")
            have.discard(value)
    addrs |= {check_address(a) for a in add_addresses}
    accounts |= {a.strip().lower() for a in add_pop3 if a.strip()}
    if not addrs and not accounts:
        raise UserError(f"user {name!r} would own nothing: keep an address or a POP3 account")
    spec = UserSpec(name, sorted(addrs), display_name, sorted(accounts))
    upsert_user(cat, spec, row["source"])
    cat.audit(
        "user.set",
        {
            "name": name,
            "add_addresses": list(add_addresses),
            "remove_addresses": list(remove_addresses),
            "add_pop3": list(add_pop3),
            "remove_pop3": list(remove_pop3),
        },
    )
    return {"name": name, "source": row["source"], "addresses": sorted(addrs),
            "pop3_accounts": sorted(accounts)}  # fmt: skip
