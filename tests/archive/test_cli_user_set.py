"""`proxy-admin user set` and POP3-only users (issue 10 item 16), in-process."""

from __future__ import annotations

import pytest
from archive_helpers import make_message, write_report
from test_cli_archive import Cli, one_line_error


@pytest.fixture
def cli(tmp_path) -> Cli:  # type: ignore[no-untyped-def]
    c = Cli(tmp_path)
    reports = c.state / "reports"
    write_report(reports, make_message("for bob", "x", to="bob@example.com"))
    write_report(reports, make_message("for bob2", "x", to="bob2@example.org"))
    fetched = make_message("downloaded", "x", frm="shop@example.net", to="info@example.net")
    write_report(reports, fetched, "pop3", pop3_user="Info.Shop")
    assert c.json("ingest")["new_messages"] == 3
    return c


def _subjects(cli: Cli, user: str) -> list[str]:
    return sorted(h["subject"] for h in cli.json("search", "x", "--user", user)["hits"])


def test_pop3_only_user_needs_no_email(cli: Cli) -> None:
    r = cli("user", "add", "shop", "--pop3-account", "info.shop")
    assert r.exit_code == 0, r.output
    assert "POP3 info.shop" in r.stdout
    assert _subjects(cli, "shop") == ["downloaded"]
    one_line_error(cli("user", "add", "nobody"), 2, "--pop3-account")


def test_user_set_adds_and_removes_addresses_and_accounts(cli: Cli) -> None:
    assert cli("user", "add", "bob", "--email", "bob@example.com").exit_code == 0
    assert _subjects(cli, "bob") == ["for bob"]

    r = cli("user", "set", "bob", "--add-email", "Bob2@Example.org", "--add-pop3-account",
            "info.shop")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert _subjects(cli, "bob") == ["downloaded", "for bob", "for bob2"]
    (user,) = cli.json("user", "list")
    assert user["addresses"] == ["bob2@example.org", "bob@example.com"]
    assert user["pop3_accounts"] == ["info.shop"]

    r = cli("user", "set", "bob", "--remove-email", "bob@example.com", "--remove-pop3-account",
            "info.shop", "--display-name", "Bob Two")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert _subjects(cli, "bob") == ["for bob2"]
    assert cli.json("user", "list")[0]["display_name"] == "Bob Two"

    one_line_error(cli("user", "set", "bob", "--remove-email", "x@example.com"), 1, "has no")
    one_line_error(cli("user", "set", "bob", "--remove-email", "bob2@example.org"), 2, "nothing")
    one_line_error(cli("user", "set", "bob"), 2, "nothing to change")
    one_line_error(cli("user", "set", "carol", "--add-email", "c@example.com"), 1, "no user")
