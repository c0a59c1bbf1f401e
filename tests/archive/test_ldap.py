"""LDAP sync against a real slapd (tests/fixtures/slapd.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from archive_helpers import make_message, write_report

from archive.ldap_sync import LdapSettings, LdapSyncError, mail_values, sync
from archive.store import Archive
from archive.users import UserSpec, add_user, list_users

PEOPLE = """\
dn: uid=alice,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: alice
cn: Alice Smith
sn: Smith
mail: alice@example.com
mail: a.smith@example.com
mail: sales@example.com

dn: uid=bob,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: B
mail: bob@example.com

dn: uid=nomail,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: nomail
cn: No Mail
sn: M
"""

AD_STYLE = """\
dn: cn=Taro Yamada,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: extensibleObject
cn: Taro Yamada
sn: Yamada
sAMAccountName: taro
proxyAddresses: SMTP:taro@example.jp
proxyAddresses: smtp:t.yamada@example.jp
proxyAddresses: X500:/o=Example/ou=First/cn=Recipients/cn=taro
"""


def _settings(slapd, **kw) -> LdapSettings:  # type: ignore[no-untyped-def]
    base = {
        "url": slapd.url,
        "base_dn": slapd.base_dn,
        "bind_dn": slapd.bind_dn,
        "password": slapd.password,
        "filter": "(objectClass=inetOrgPerson)",
    }
    base.update(kw)
    return LdapSettings(**base)


def test_sync_several_mail_values_idempotent_and_prunes(slapd, state: Path, archive: Archive):  # type: ignore[no-untyped-def]
    slapd.add(PEOPLE)
    write_report(
        state / "reports",
        make_message("to sales", "x", frm="x@example.org", to="sales@example.com"),
    )
    archive.ingest_pending(state / "reports")
    add_user(archive.catalog, UserSpec("manual", ["m@example.com"]))

    first = sync(archive.catalog, _settings(slapd))
    assert (first.added, first.updated, first.removed) == (2, 0, 0)
    assert first.errors == ["uid=nomail,ou=people,dc=example,dc=com: no mail address"]
    users = {u["name"]: u for u in list_users(archive.catalog)}
    assert users["alice"]["addresses"] == [
        "a.smith@example.com",
        "alice@example.com",
        "sales@example.com",
    ]
    assert users["alice"]["display_name"] == "Alice Smith"
    assert users["alice"]["source"] == "ldap" and users["manual"]["source"] == "manual"
    assert [h.subject for h in archive.search("", user="alice")] == ["to sales"]

    again = sync(archive.catalog, _settings(slapd))
    assert (again.added, again.updated, again.unchanged, again.removed) == (0, 0, 2, 0)

    slapd.modify(
        "dn: uid=bob,ou=people,dc=example,dc=com\nchangetype: delete\n\n"
        "dn: uid=alice,ou=people,dc=example,dc=com\nchangetype: modify\n"
        "delete: mail\nmail: sales@example.com\n"
    )
    third = sync(archive.catalog, _settings(slapd))
    assert (third.updated, third.removed) == (1, 1)
    assert sorted(u["name"] for u in list_users(archive.catalog)) == ["alice", "manual"]
    assert archive.search("", user="alice") == []


def test_active_directory_proxy_addresses(slapd, archive: Archive) -> None:  # type: ignore[no-untyped-def]
    slapd.add(AD_STYLE)
    result = sync(
        archive.catalog,
        _settings(slapd, name_attr="sAMAccountName", mail_attrs=("proxyAddresses",)),
    )
    assert result.added == 1, result.errors
    (user,) = list_users(archive.catalog)
    assert user["name"] == "taro"
    assert user["addresses"] == ["t.yamada@example.jp", "taro@example.jp"]


def test_bad_credentials_are_one_line_without_password(slapd, archive: Archive) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LdapSyncError) as e:
        sync(archive.catalog, _settings(slapd, password="wrong-Pa55"))
    assert "wrong-Pa55" not in str(e.value) and "\n" not in str(e.value)
    assert slapd.url in str(e.value)


def test_proxy_addresses_parsing() -> None:
    values = [b"SMTP:a@x.jp", "smtp:b@x.jp", "X500:/o=x", "SIP:a@x.jp"]
    assert mail_values("proxyAddresses", values) == ["a@x.jp", "b@x.jp"]
    assert mail_values("mail", ["plain@x.jp"]) == ["plain@x.jp"]
