"""The archive commands of `proxy-admin`, in-process on a temp config."""

from __future__ import annotations

import hashlib
import json
import mailbox
from pathlib import Path
from typing import Any

import pytest
from archive_helpers import JP_SUBJECT, jp_message, make_message, write_report
from maintenance_helpers import one_line_error
from typer.testing import CliRunner

from admin.cli import app


class Cli:
    def __init__(self, tmp: Path) -> None:
        self.config = tmp / "etc" / "config.toml"
        self.runner = CliRunner()
        r = self("init", "--state-dir", "state", "--hostname", "gw.example.org")
        assert r.exit_code == 0, r.output
        self.state = self.config.parent / "state"

    def __call__(self, *args: str, input: str | None = None) -> Any:
        return self.runner.invoke(app, ["--config", str(self.config), *args], input=input)

    def json(self, *args: str, input: str | None = None) -> Any:
        r = self(*args, "--json", input=input)
        assert r.exit_code == 0, (r.stdout, r.stderr)
        return json.loads(r.stdout)


def make_message_bytes_of(cli: Cli, subject: str) -> bytes:
    (mpr,) = [
        p for p in (cli.state / "reports").glob("*.eml") if subject.encode() in p.read_bytes()
    ]
    return mpr.read_bytes()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_ingest_search_show_export(cli: Cli, tmp_path: Path) -> None:
    raw = jp_message()
    write_report(cli.state / "reports", raw, rcpt=["bob@example.com"])
    write_report(cli.state / "reports", make_message("plain english", "nothing"))
    stats = cli.json("ingest")
    assert (stats["reports"], stats["new_messages"], stats["errors"]) == (2, 2, [])
    found = cli.json("search", "請求書")
    assert found["total"] == 1 and found["hits"][0]["subject"] == JP_SUBJECT
    mid = found["hits"][0]["id"]
    assert [h["id"] for h in cli.json("search", "subject:請求書")["hits"]] == [mid]
    table = cli("search", "subject:請求書")
    assert table.exit_code == 0 and JP_SUBJECT in table.stdout
    assert table.stdout.splitlines()[0].split() == [
        "ID",
        "DATE",
        "(UTC)",
        "FROM",
        "SUBJECT",
        "SIZE",
        "ATT",
    ]

    shown = cli("show", str(mid), "--raw")
    assert shown.exit_code == 0
    assert hashlib.sha256(shown.stdout_bytes).hexdigest() == hashlib.sha256(raw).hexdigest()
    info = cli.json("show", str(mid))
    assert info["subject"] == JP_SUBJECT and "請求書を送付" in info["text"]
    assert info["reports"][0]["rcpt_to"] == ["bob@example.com"]

    out = tmp_path / "out"
    exp = cli.json("export", "請求書", "--out", str(out))
    assert exp["count"] == 1
    (eml,) = out.glob("*.eml")
    assert eml.read_bytes() == raw
    cli.json("export", "", "--out", str(out), "--format", "mbox")
    box = mailbox.mbox(out / "mailtee-export.mbox")
    try:
        assert sorted(box.get_bytes(k) for k in box.keys()) == sorted(
            [raw, make_message_bytes_of(cli, "plain english")]
        )
    finally:
        box.close()
    audit = cli.json("search", "", "--limit", "1")
    assert audit["total"] == 2


def test_import_maildir_mbox_eml_and_report_dir(cli: Cli, tmp_path: Path) -> None:
    md = mailbox.Maildir(tmp_path / "Maildir", create=True)
    md.add(make_message("from maildir", "a"))
    md.add(make_message("from maildir 2", "b"))
    mb = mailbox.mbox(tmp_path / "box.mbox", create=True)
    mb.add(make_message("from mbox", "c"))
    mb.add(make_message("from maildir", "a"))  # not the same bytes (new Message-ID)
    mb.flush()
    mb.close()
    emls = tmp_path / "emls" / "sub"
    emls.mkdir(parents=True)
    (emls / "x.eml").write_bytes(make_message("from eml dir", "d"))
    reports = tmp_path / "old-reports"
    write_report(reports, make_message("from old report dir", "e"))
    for path, new in [("Maildir", 2), ("box.mbox", 2), ("emls", 1), ("old-reports", 1)]:
        stats = cli.json("import", str(tmp_path / path))
        assert stats["new_messages"] == new, (path, stats)
    again = cli.json("import", str(tmp_path / "box.mbox"))
    assert (again["new_messages"], again["duplicates"], again["updated_reports"]) == (0, 0, 2)
    assert cli.json("search", "from")["total"] == 6
    one_line_error(cli("import", str(tmp_path / "missing")), 2, "no such file")


def test_users_csv_and_restricted_search(cli: Cli, tmp_path: Path) -> None:
    write_report(cli.state / "reports", make_message("for bob", "x", to="bob@example.com"))
    write_report(cli.state / "reports", make_message("for eve", "x", to="eve@example.com"))
    cli.json("ingest")
    r = cli("user", "add", "bob", "--email", "bob@example.com", "--email", "rob@example.com")
    assert r.exit_code == 0, r.output
    csv = tmp_path / "u.csv"
    csv.write_text("name,email\neve,eve@example.com\nbad,not-mail\n")
    r = cli("user", "import-csv", str(csv), "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["added"] == 1
    assert json.loads(r.stdout)["errors"] == ["line 3: 'not-mail' is not an email address"]
    users = {u["name"]: u for u in cli.json("user", "list")}
    assert users["bob"]["addresses"] == ["bob@example.com", "rob@example.com"]
    assert users["eve"]["messages"] == 1
    assert [h["subject"] for h in cli.json("search", "", "--user", "bob")["hits"]] == ["for bob"]
    assert [h["subject"] for h in cli.json("search", "", "--user", "eve")["hits"]] == ["for eve"]
    one_line_error(cli("search", "x", "--user", "nobody"), 1, "no user named 'nobody'")
    one_line_error(cli("user", "add", "x", "--email", "nope"), 2, "not an email address")
    assert cli("user", "remove", "bob").exit_code == 0
    assert [u["name"] for u in cli.json("user", "list")] == ["eve"]


def test_sync_ldap_from_cli(cli: Cli, slapd: Any) -> None:
    slapd.add(
        "dn: uid=alice,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: alice\n"
        "cn: Alice\nsn: A\nmail: alice@example.com\nmail: alias@example.com\n"
    )
    args = [
        "user",
        "sync-ldap",
        "--url",
        slapd.url,
        "--base-dn",
        slapd.base_dn,
        "--bind-dn",
        slapd.bind_dn,
        "--password-stdin",
    ]
    first = cli.json(*args, input=slapd.password + "\n")
    assert first["added"] == 1
    assert cli.json(*args, input=slapd.password + "\n")["unchanged"] == 1
    (user,) = cli.json("user", "list")
    assert user["addresses"] == ["alias@example.com", "alice@example.com"]
    r = cli(*args, input="wrong\n")
    one_line_error(r, 1, "cannot bind")
    assert "wrong" not in r.stderr


def test_errors_are_one_line(cli: Cli) -> None:
    one_line_error(cli("search", "has:pdf"), 2, "only has:attachment")
    one_line_error(cli("show", "999"), 1, "no archived message 999")
    one_line_error(cli("show", "abc"), 2, "not a message id")
    one_line_error(cli("export", "x", "--out", "/tmp/x", "--format", "zip"), 2, "eml or mbox")


@pytest.mark.parametrize(
    "command",
    [
        ["ingest"],
        ["search"],
        ["show"],
        ["export"],
        ["import"],
        ["user"],
        ["user", "add"],
        ["user", "list"],
        ["user", "remove"],
        ["user", "import-csv"],
        ["user", "sync-ldap"],
    ],
)
def test_every_command_has_help(cli: Cli, command: list[str]) -> None:
    r = cli(*command, "--help")
    assert r.exit_code == 0 and "Usage" in r.stdout


def test_ingest_while_another_writer_holds_the_lock(cli: Cli) -> None:
    from archive.store import Archive

    write_report(cli.state / "reports", make_message())
    holder = Archive(cli.state)
    try:
        holder._acquire()  # as the service's background ingest does while it works
        one_line_error(cli("ingest"), 1, "being written by another process")
    finally:
        holder.close()
    assert cli.json("ingest")["new_messages"] == 1


def test_user_passwd_and_role(cli: Cli) -> None:
    assert cli("user", "add", "alice", "--email", "alice@example.com").exit_code == 0
    r = cli("user", "passwd", "alice", "--password-stdin", input="s3cret-pass\n")
    assert r.exit_code == 0, r.output
    assert "s3cret-pass" not in r.output
    r = cli("user", "passwd", "alice", "--password-stdin", input="short\n")
    assert r.exit_code == 2 and "at least 8" in r.output
    assert cli("user", "passwd", "alice").exit_code == 2
    assert cli("user", "passwd", "nobody", "--password-stdin", input="long enough\n").exit_code == 1
    assert cli("user", "role", "alice", "auditor").exit_code == 0
    assert cli("user", "role", "alice", "root").exit_code == 2
    [u] = cli.json("user", "list")
    assert u["role"] == "auditor" and u["local_password"] is True
    assert cli("user", "passwd", "alice", "--clear").exit_code == 0
    [u] = cli.json("user", "list")
    assert u["local_password"] is False
