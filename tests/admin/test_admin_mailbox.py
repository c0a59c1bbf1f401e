"""`proxy-admin mailbox ...`: config/secrets round trip, one-line errors, no password shown."""

from __future__ import annotations

import json

from admin_cli_helpers import Cli, assert_one_line_error

from admin.cli_mailbox import mailbox_name_for, read_csv

PW = "Mailbox-Secret-1"


def add(cli: Cli, name: str, *args: str, password: str = PW) -> None:
    r = cli("mailbox", "add", name, *args, "--password-stdin", input=password + "\n")
    assert r.exit_code == 0, r.output


def test_add_list_show_set_remove(initialised: Cli) -> None:
    add(initialised, "alice", "--protocol", "imap", "--server", "imap.example.com",
        "--user", "alice@example.com", "--folders", "INBOX", "--folders", "Archive/2024",
        "--interval", "15m")  # fmt: skip
    add(initialised, "pop", "--protocol", "pop3", "--server", "pop.example.com:1110",
        "--tls", "none", "--user", "p", "--delete-after-days", "30")  # fmt: skip
    boxes = initialised.toml()["mailbox"]
    assert boxes[0]["port"] == 993 and boxes[0]["folders"] == ["INBOX", "Archive/2024"]
    assert boxes[1]["port"] == 1110 and boxes[1]["delete_after_days"] == 30
    assert PW not in initialised.config_path.read_text()
    assert initialised.secrets()["mailbox"]["alice"]["password"] == PW
    assert oct(initialised.secrets_path.stat().st_mode & 0o777) == "0o600"

    r = initialised("mailbox", "list")
    assert r.exit_code == 0 and "alice" in r.stdout and "15m" in r.stdout
    for args in (("mailbox", "show", "alice"), ("mailbox", "show", "alice", "--json"),
                 ("mailbox", "list", "--json")):  # fmt: skip
        r = initialised(*args)
        assert r.exit_code == 0 and PW not in r.output
    shown = json.loads(initialised("mailbox", "show", "alice", "--json").stdout)
    assert shown["password"] == "set" and shown["interval"] == "15m"

    r = initialised("mailbox", "set", "alice", "--tls", "starttls", "--interval", "")
    assert r.exit_code == 0, r.output
    box = initialised.toml()["mailbox"][0]
    assert (box["tls"], box["port"], box.get("interval")) == ("starttls", 143, None)
    r = initialised("mailbox", "set", "alice", "--password-stdin", input="New-Pw-2\n")
    assert r.exit_code == 0 and initialised.secrets()["mailbox"]["alice"]["password"] == "New-Pw-2"

    assert initialised("mailbox", "remove", "alice").exit_code == 0
    assert [b["name"] for b in initialised.toml()["mailbox"]] == ["pop"]
    assert "alice" not in initialised.secrets().get("mailbox", {})


def test_listener_changes_keep_mailbox_passwords(initialised: Cli) -> None:
    add(initialised, "m", "--protocol", "imap", "--server", "imap.example.com", "--user", "u")
    r = initialised("listener", "add", "s", "--protocol", "smtp", "--target", "smtp.example.net")
    assert r.exit_code == 0, r.output
    assert initialised("listener", "remove", "s").exit_code == 0
    assert initialised.secrets()["mailbox"]["m"]["password"] == PW


def test_errors_are_one_line(initialised: Cli) -> None:
    r = initialised("mailbox", "add", "x", "--protocol", "smtp", "--server", "h", "--user", "u",
                    "--password-stdin", input="p\n")  # fmt: skip
    assert_one_line_error(r, 2, "--protocol")
    r = initialised("mailbox", "add", "x", "--protocol", "imap", "--server", "h", "--user", "u")
    assert_one_line_error(r, 2, "--password-stdin")
    r = initialised("mailbox", "add", "x", "--protocol", "pop3", "--server", "h", "--user", "u",
                    "--folders", "INBOX", "--password-stdin", input="p\n")  # fmt: skip
    assert_one_line_error(r, 2, "only for imap")
    r = initialised("mailbox", "add", "x", "--protocol", "imap", "--server", "h", "--user", "u",
                    "--interval", "5s", "--password-stdin", input="p\n")  # fmt: skip
    assert_one_line_error(r, 2, "--interval")
    assert_one_line_error(initialised("mailbox", "show", "nope"), 1, "no mailbox named")
    assert_one_line_error(initialised("pull"), 1, "no mailboxes configured")


def test_journal_listener_needs_no_target(initialised: Cli) -> None:
    r = initialised("listener", "add", "j", "--protocol", "smtp-journal", "--port", "2525")
    assert r.exit_code == 0, r.output
    assert "receive and archive only" in r.stdout
    assert "(journal)" in initialised("listener", "list").stdout
    r = initialised("listener", "add", "k", "--protocol", "smtp-journal", "--port", "2526",
                    "--target", "smtp.example.net")  # fmt: skip
    assert_one_line_error(r, 2, "no target")


def test_csv_reader_and_names() -> None:
    rows = read_csv('\ufeffUser,Pass,Mail,Owner\na@x.example,"p,w",,\nb,pw2,b@x.example,bob\n')
    assert rows == [("a@x.example", "p,w", None, None), ("b", "pw2", "b@x.example", "bob")]
    assert read_csv("u\tp\nx\ty\n") == [("x", "y", None, None)]
    assert mailbox_name_for("a@x.example", set()) == "a-x-example"
    assert mailbox_name_for("a@x.example", {"a-x-example"}) == "a-x-example-2"


def test_an_oauth2_mailbox_needs_no_password_and_a_listener_account(initialised: Cli) -> None:
    import pytest

    from admin.config import AccountConfig, Config, MailboxConfig

    base = ("mailbox", "add", "m365", "--protocol", "imap", "--server", "outlook.office365.com",
            "--user", "a@example.com", "--account", "work")  # fmt: skip
    r = initialised(*base)
    assert_one_line_error(r, 2, "no account named 'work'")
    r = initialised(*base, "--password-stdin", input="pw\n")
    assert_one_line_error(r, 2, "--account and --password-stdin")
    box = MailboxConfig(name="m", protocol="imap", server="x", user="a@example.com",
                        account="work")  # fmt: skip
    listener_acc = AccountConfig(name="work", provider="microsoft", email="a@example.com")
    person_acc = listener_acc.model_copy(update={"protect": "password"})
    Config(hostname="h", account=[listener_acc], mailbox=[box])  # a listener account: fine
    with pytest.raises(ValueError, match="locked by its owner's local password"):
        Config(hostname="h", account=[person_acc], mailbox=[box])
    with pytest.raises(ValueError, match="no account named 'work'"):
        Config(hostname="h", mailbox=[box])


def test_status_shows_each_mailboxs_last_pull(initialised: Cli) -> None:
    from archive.pull.state import PullState

    add(initialised, "good", "--protocol", "imap", "--server", "imap.example.com",
        "--user", "g", "--interval", "15m")  # fmt: skip
    add(initialised, "bad", "--protocol", "pop3", "--server", "pop.example.com", "--user", "b")
    add(initialised, "new", "--protocol", "pop3", "--server", "pop.example.com", "--user", "n")
    state_dir = initialised.config_path.parent / initialised.toml()["state_dir"]
    state = PullState(state_dir)
    try:
        state.record_run("good", True, None)
        state.record_run("bad", True, None)
        state.record_run("bad", False, "pop.example.com:995: -ERR [AUTH] authentication failed")
        state.record_run("bad", False, "pop.example.com:995: -ERR [AUTH] authentication failed")
    finally:
        state.close()
    r = initialised("status", "--json")
    assert r.exit_code == 0, r.output
    boxes = {b["name"]: b for b in json.loads(r.stdout)["mailboxes"]}
    assert boxes["good"]["failures_in_a_row"] == 0 and boxes["good"]["last_ok"]
    assert (
        boxes["bad"]["failures_in_a_row"] == 2
        and "authentication failed" in (boxes["bad"]["last_error"])
    )
    assert boxes["bad"]["last_ok"] and boxes["new"]["last_run"] is None
    human = initialised("status").stdout
    assert "mailbox good" in human and "ok, last pull" in human and "every 15m" in human
    assert "FAILED 2 time(s) in a row" in human and "never pulled" in human
    assert PW not in r.stdout + human
