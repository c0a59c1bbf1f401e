"""Local passwords (argon2id) and roles: archive/logins.py and `user passwd|role`."""

from __future__ import annotations

import pytest

from archive.catalog import Catalog
from archive.logins import (
    get_role,
    has_password,
    resolve_login,
    set_password,
    set_role,
    verify_password,
)
from archive.users import UserError, UserSpec, add_user, list_users, remove_user


@pytest.fixture
def cat(tmp_path):
    c = Catalog(tmp_path / "catalog.sqlite")
    add_user(c, UserSpec("alice", ["alice@example.com"]))
    yield c
    c.close()


def test_password_round_trip_and_hash_at_rest(cat):
    assert not has_password(cat, "alice")
    assert not verify_password(cat, "alice", "correct horse")
    set_password(cat, "alice", "correct horse")
    assert has_password(cat, "alice")
    assert verify_password(cat, "alice", "correct horse")
    assert not verify_password(cat, "alice", "correct hors")
    assert not verify_password(cat, "nobody", "correct horse")
    stored = cat.one("SELECT password_hash FROM logins")["password_hash"]
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    audit = " ".join(r["detail"] for r in cat.query("SELECT detail FROM audit"))
    assert "correct horse" not in audit


def test_bad_passwords_refused(cat):
    for bad in ("short", "line\nbreak-here", "x" * 2000):
        with pytest.raises(UserError):
            set_password(cat, "alice", bad)
    with pytest.raises(UserError):
        set_password(cat, "nobody", "long enough password")
    assert not verify_password(cat, "alice", "x" * 5000)


def test_roles(cat):
    assert get_role(cat, "alice") == "user"
    set_role(cat, "alice", "auditor")
    assert get_role(cat, "alice") == "auditor"
    set_password(cat, "alice", "correct horse")
    assert get_role(cat, "alice") == "auditor"  # a password change keeps the role
    with pytest.raises(UserError):
        set_role(cat, "alice", "root")
    [row] = list_users(cat)
    assert row["role"] == "auditor" and row["local_password"] is True
    remove_user(cat, "alice")
    assert cat.one("SELECT COUNT(*) FROM logins")[0] == 0


def test_resolve_login_by_name_or_address(cat):
    assert resolve_login(cat, "alice") == "alice"
    assert resolve_login(cat, "ALICE@example.com") == "alice"
    assert resolve_login(cat, "bob@example.com") is None
