"""Users, CSV import, ownership and ownership-restricted search."""

from __future__ import annotations

from pathlib import Path

import pytest
from archive_helpers import ids, make_message, write_report

from archive.store import Archive, ArchiveError
from archive.users import UserError, UserSpec, add_user, import_csv, list_users, remove_user


def _mail(state: Path, archive: Archive) -> dict[str, int]:
    r = state / "reports"
    write_report(r, make_message("to alice", "x", to="Alice <ALICE@example.com>"))
    write_report(r, make_message("cc bob", "x", to="z@example.org", cc="bob@example.com"))
    # bob is only a BCC: envelope recipient, in no header
    write_report(r, make_message("bcc bob", "x", to="z@example.org"), rcpt=["bob@example.com"])
    write_report(
        r,
        make_message("pop for carol", "x", to="list@example.org"),
        "pop3",
        pop3_user="Carol.Mailbox",
        outcome="delivered",
    )
    write_report(r, make_message("nobody's", "x", frm="x@example.org", to="y@example.org"))
    archive.ingest_pending(r)
    return {h.subject: h.id for h in archive.search("", limit=100)}


def test_ownership_restricted_search(state: Path, archive: Archive) -> None:
    by = _mail(state, archive)
    add_user(archive.catalog, UserSpec("alice", ["alice@example.com"]))
    add_user(archive.catalog, UserSpec("bob", ["bob@example.com", "robert@example.com"]))
    add_user(archive.catalog, UserSpec("carol", ["carol@example.com"], None, ["carol.mailbox"]))
    # every test message is From alice@example.com except "nobody's"
    assert sorted(ids(archive.search("", user="alice"))) == sorted(
        v for k, v in by.items() if k != "nobody's"
    )
    assert sorted(ids(archive.search("", user="bob"))) == sorted([by["cc bob"], by["bcc bob"]])
    assert ids(archive.search("bcc", user="bob")) == [by["bcc bob"]]
    assert ids(archive.search("", user="carol")) == [by["pop for carol"]]
    assert archive.search("nobody", user="bob") == []
    with pytest.raises(ArchiveError, match="no user named"):
        archive.search("x", user="mallory")
    counts = {u["name"]: u["messages"] for u in list_users(archive.catalog)}
    assert counts == {"alice": 4, "bob": 2, "carol": 1}
    remove_user(archive.catalog, "bob")
    assert [u["name"] for u in list_users(archive.catalog)] == ["alice", "carol"]
    actions = [r["action"] for r in archive.catalog.query("SELECT action FROM audit")]
    assert actions == ["user.add"] * 3 + ["user.remove"]


def test_user_added_later_owns_old_mail_and_new_mail(state: Path, archive: Archive) -> None:
    _mail(state, archive)
    add_user(archive.catalog, UserSpec("dave", ["dave@example.com"]))
    assert archive.search("", user="dave") == []
    write_report(state / "reports", make_message("for dave", "x", to="dave@example.com"))
    archive.ingest_pending(state / "reports")
    assert [h.subject for h in archive.search("", user="dave")] == ["for dave"]
    assert list_users(archive.catalog)[0]["messages"] == 1


def test_csv_import_keeps_good_rows_and_reports_bad_ones(tmp_path: Path, archive: Archive) -> None:
    csv = tmp_path / "users.csv"
    csv.write_text(
        "\ufeffname,email,display_name,pop3_account\n"
        "alice,alice@example.com;a.smith@example.com,Alice Smith,\n"
        "bob,not-an-address,Bob,\n"
        ",nobody@example.com,,\n"
        "carol,carol@example.com,Carol,carol;c2\n"
        "alice,dup@example.com,,\n",
        encoding="utf-8",
    )
    result = import_csv(archive.catalog, csv)
    assert (result.added, result.updated, result.unchanged) == (2, 0, 0)
    assert result.errors == [
        "line 3: 'not-an-address' is not an email address",
        "line 4: '' is not a valid user name (no spaces, '/', '\\' or ':')",
        "line 6: user 'alice' appears twice",
    ]
    users = {u["name"]: u for u in list_users(archive.catalog)}
    assert users["alice"]["addresses"] == ["a.smith@example.com", "alice@example.com"]
    assert users["alice"]["display_name"] == "Alice Smith"
    assert users["carol"]["pop3_accounts"] == ["c2", "carol"]
    again = import_csv(archive.catalog, csv)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 2)


def test_csv_without_required_columns_is_refused(tmp_path: Path, archive: Archive) -> None:
    csv = tmp_path / "u.csv"
    csv.write_text("user,mail\nalice,alice@example.com\n")
    with pytest.raises(UserError, match="missing: name, email"):
        import_csv(archive.catalog, csv)


def test_add_validates(archive: Archive) -> None:
    with pytest.raises(UserError):
        add_user(archive.catalog, UserSpec("x y", ["a@example.com"]))
    with pytest.raises(UserError):
        add_user(archive.catalog, UserSpec("x", ["nope"]))
    add_user(archive.catalog, UserSpec("x", ["a@example.com"]))
    with pytest.raises(UserError, match="already exists"):
        add_user(archive.catalog, UserSpec("x", ["b@example.com"]))


def test_second_sighting_adds_an_owner(state: Path, archive: Archive) -> None:
    raw = make_message("shared mailbox", "x", frm="x@example.org", to="team@example.org")
    write_report(state / "reports", raw, "pop3", pop3_user="anna", outcome="delivered")
    add_user(archive.catalog, UserSpec("anna", ["anna@example.org"], None, ["anna"]))
    add_user(archive.catalog, UserSpec("ben", ["ben@example.org"]))
    archive.ingest_pending(state / "reports")
    assert archive.search("shared", user="ben") == []
    # ben leaves mail on the same server: the same bytes, retrieved by his account;
    # and he sends it on to himself by SMTP (envelope only, no header change)
    write_report(state / "reports", raw, "pop3", pop3_user="ben@example.org", outcome="delivered")
    stats = archive.ingest_pending(state / "reports")
    assert (stats.new_messages, stats.duplicates) == (0, 1)
    assert [h.subject for h in archive.search("shared", user="ben")] == ["shared mailbox"]
    assert [h.subject for h in archive.search("shared", user="anna")] == ["shared mailbox"]
    assert archive.count() == 1 and archive.index.count() == 1
    owners = archive.get_message(1)["owners"]
    assert owners == ["anna", "ben"]
