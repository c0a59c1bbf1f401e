"""Local logins: passwords (argon2id) and roles of archive users.

One place answers "may this person log in, and as what": the web side (archive access)
and the proxy's local logins (a mail client logging in to mailtee before mailtee logs in
upstream with an OAuth2 account) both call `verify_password`. Directory users (LDAP) log
in by a bind instead; their role is still kept here.

Roles: `user` (own mail only, the ownership rules of archive/users.py), `auditor`
(everyone's mail, read-only, every access audited), `admin`. A user without a `logins`
row has the role `user` and no local password.

Hashes are argon2id in PHC string form (argon2-cffi's defaults: RFC 9106 "low memory"
profile); a hash made with older parameters is re-hashed on the next successful login.
The password itself is never stored, logged or written to the audit log.
"""

from __future__ import annotations

from typing import Literal, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .catalog import Catalog, now_iso
from .users import UserError

Role = Literal["user", "auditor", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
DEFAULT_ROLE: Role = "user"
# A password is a secret the person types; bound its size so hashing cannot be used to
# burn CPU with megabyte inputs (argon2 would accept them).
MAX_PASSWORD_BYTES = 1024
MIN_PASSWORD_CHARS = 8

_hasher = PasswordHasher()
# Verified against when the user does not exist or has no password, so that the time a
# failed login takes does not tell an attacker which user names exist.
_DUMMY_HASH = _hasher.hash("mailtee-no-such-user")


def _user_id(cat: Catalog, name: str) -> int:
    row = cat.one("SELECT id FROM users WHERE name = ?", (name,))
    if row is None:
        raise UserError(f"no user named {name!r}")
    return int(row["id"])


def check_password_text(password: str) -> str:
    """Refuse a password that is empty, too short, too long or holds a line break."""
    if any(c in password for c in "\r\n\x00"):
        raise UserError("the password must not contain line breaks or NUL")
    if len(password) < MIN_PASSWORD_CHARS:
        raise UserError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise UserError(f"the password must be at most {MAX_PASSWORD_BYTES} bytes")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password_text(password))


def set_password(cat: Catalog, name: str, password: str) -> None:
    """Set (or replace) a user's local password; audited without the password."""
    uid = _user_id(cat, name)
    hashed = hash_password(password)
    with cat.transaction() as conn:
        conn.execute(
            "INSERT INTO logins(user, password_hash, role, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(user) DO UPDATE SET password_hash = excluded.password_hash, "
            "updated_at = excluded.updated_at",
            (uid, hashed, DEFAULT_ROLE, now_iso()),
        )
    cat.audit("user.passwd", {"name": name})


def clear_password(cat: Catalog, name: str) -> None:
    uid = _user_id(cat, name)
    with cat.transaction() as conn:
        conn.execute(
            "UPDATE logins SET password_hash = NULL, updated_at = ? WHERE user = ?",
            (now_iso(), uid),
        )
    cat.audit("user.passwd-clear", {"name": name})


def set_role(cat: Catalog, name: str, role: str) -> None:
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    uid = _user_id(cat, name)
    with cat.transaction() as conn:
        conn.execute(
            "INSERT INTO logins(user, password_hash, role, updated_at) VALUES (?, NULL, ?, ?) "
            "ON CONFLICT(user) DO UPDATE SET role = excluded.role, "
            "updated_at = excluded.updated_at",
            (uid, role, now_iso()),
        )
    cat.audit("user.role", {"name": name, "role": role})


def get_role(cat: Catalog, name: str) -> Role:
    row = cat.one(
        "SELECT l.role FROM logins l JOIN users u ON u.id = l.user WHERE u.name = ?", (name,)
    )
    role = row["role"] if row is not None and row["role"] else DEFAULT_ROLE
    return role if role in ROLES else DEFAULT_ROLE


def has_password(cat: Catalog, name: str) -> bool:
    row = cat.one(
        "SELECT l.password_hash FROM logins l JOIN users u ON u.id = l.user WHERE u.name = ?",
        (name,),
    )
    return row is not None and bool(row["password_hash"])


def verify_password(cat: Catalog, name: str, password: str) -> bool:
    """True when `name` has a local password and `password` is it.

    Costs one argon2 verification whatever the outcome (unknown user, no password, wrong
    password), so timing does not reveal which accounts exist. Blocking (tens of ms):
    call it from a worker thread in Trio code.
    """
    row = cat.one(
        "SELECT u.id, l.password_hash FROM users u LEFT JOIN logins l ON l.user = u.id "
        "WHERE u.name = ?",
        (name,),
    )
    stored = row["password_hash"] if row is not None else None
    too_long = len(password.encode()) > MAX_PASSWORD_BYTES
    try:
        _hasher.verify(stored or _DUMMY_HASH, "x" if too_long else password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if stored is None or too_long:
        return False
    if _hasher.check_needs_rehash(stored):
        with cat.transaction() as conn:
            conn.execute(
                "UPDATE logins SET password_hash = ?, updated_at = ? WHERE user = ?",
                (_hasher.hash(password), now_iso(), row["id"]),  # type: ignore[index]
            )
    return True


def login_names_for_address(cat: Catalog, address: str) -> list[str]:
    """The users one of whose addresses is `address` (a mail client logs in with either)."""
    rows = cat.query(
        "SELECT u.name FROM users u JOIN user_identities ui ON ui.user = u.id "
        "WHERE ui.kind = 'address' AND ui.value = ? ORDER BY u.name",
        (address.strip().lower(),),
    )
    return [r["name"] for r in rows]


def resolve_login(cat: Catalog, login: str) -> str | None:
    """A login as typed (user name or one of the user's addresses) -> the user name."""
    if cat.one("SELECT 1 FROM users WHERE name = ?", (login,)) is not None:
        return login
    names = login_names_for_address(cat, login) if "@" in login else []
    return names[0] if len(names) == 1 else None
