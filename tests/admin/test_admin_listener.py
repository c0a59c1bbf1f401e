"""proxy-admin listener add/list/show/set/remove, validation and the provider password."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import trustme
from admin_cli_helpers import Cli, assert_one_line_error

PASSWORD = "s3cr#t pa$$ with spaces"


def add(cli: Cli, name: str, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    r = cli("listener", "add", name, *args, input=input)
    assert r.exit_code == 0, r.output
    return r


def test_add_list_show_set_remove_round_trip(initialised: Cli) -> None:
    add(initialised, "out", "--protocol", "smtp", "--target", "smtp.example.net:587",
        "--target-tls", "starttls")  # fmt: skip
    add(initialised, "in", "--protocol", "pop3", "--target", "pop.example.net", "--target-tls",
        "implicit", "--client-tls", "implicit", "--listen", "192.0.2.1")  # fmt: skip
    data = initialised.toml()["listener"]
    assert data[0] == {
        "name": "out", "protocol": "smtp", "listen": "0.0.0.0", "port": 25,
        "client_tls": "none", "target_host": "smtp.example.net", "target_port": 587,
        "target_tls": "starttls", "target_verify": True,
    }  # fmt: skip
    assert (data[1]["port"], data[1]["target_port"], data[1]["listen"]) == (995, 995, "192.0.2.1")

    r = initialised("listener", "list", "--json")
    assert r.exit_code == 0
    assert [x["name"] for x in json.loads(r.stdout)] == ["out", "in"]

    r = initialised("listener", "set", "out", "--port", "2525", "--no-verify-target")
    assert r.exit_code == 0, r.output
    out = initialised.toml()["listener"][0]
    assert (out["port"], out["target_verify"], out["target_port"]) == (2525, False, 587)

    r = initialised("listener", "show", "out", "--json")
    shown = json.loads(r.stdout)
    assert shown["port"] == 2525 and shown["target_password"] == "not set"
    assert list(shown) == sorted(shown)

    r = initialised("listener", "remove", "in")
    assert r.exit_code == 0, r.output
    assert [x["name"] for x in initialised.toml()["listener"]] == ["out"]
    r = initialised("listener", "remove", "out")
    assert r.exit_code == 0
    assert "listener" not in initialised.toml()


def test_list_table_is_aligned(initialised: Cli) -> None:
    add(initialised, "a", "--protocol", "smtp", "--target", "h")
    add(initialised, "long-listener-name", "--protocol", "pop3", "--target", "[2001:db8::1]:110")
    r = initialised("listener", "list")
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    header = lines[0]
    for column in ("PROTO", "LISTEN", "TARGET", "CLIENT-TLS"):
        col = header.index(column)
        for row in lines[1:]:
            assert row[col - 2 : col] == "  " and row[col] != " ", (column, row)
    assert "[2001:db8::1]:110" in r.stdout


def test_list_empty(initialised: Cli) -> None:
    r = initialised("listener", "list")
    assert r.exit_code == 0 and "no listeners" in r.stdout
    assert json.loads(initialised("listener", "list", "--json").stdout) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--port", "0"], "--port: must be 1-65535"),
        (["--port", "65536"], "--port: must be 1-65535"),
        (["--listen", "example.org"], "--listen"),
        (["--client-tls", "ssl"], "--client-tls"),
        (["--target-tls", "tls"], "--target-tls"),
        (["--target-ca", "/x"], "--target-ca: /x: no such file"),
        (["--target", "h:99999"], "--target: must be 1-65535"),
        (["--target", "h:smtp"], "--target"),
        (["--target", "[::1"], "--target"),
        (["--target", "[nothost]:25"], "--target"),
        (["--target", "bad host"], "--target"),
        (["--target", ""], "--target"),
        (["--protocol", "imap"], "--protocol"),
        (["--target-user", "u"], "--target-user"),  # no password stored, none given
        (["--target-password-stdin"], "--target-password-stdin"),  # no user
    ],
)
def test_bad_values_are_one_line_exit_2(initialised: Cli, args: list[str], needle: str) -> None:
    before = initialised.config_path.read_bytes()
    base = {"--protocol": "smtp", "--target": "smtp.example.net"}
    for opt in args:
        base.pop(opt, None)
    argv = [x for kv in base.items() for x in kv] + args
    r = initialised("listener", "add", "x", *argv, input=PASSWORD + "\n")
    assert_one_line_error(r, 2, needle)
    assert initialised.config_path.read_bytes() == before


def test_bad_name_and_missing_required(initialised: Cli) -> None:
    r = initialised("listener", "add", "no spaces", "--protocol", "smtp", "--target", "h")
    assert_one_line_error(r, 2, "NAME")
    assert_one_line_error(initialised("listener", "add", "x", "--target", "h"), 2, "--protocol")
    assert_one_line_error(initialised("listener", "add", "x", "--protocol", "smtp"), 2, "--target")


def test_target_user_is_smtp_only(initialised: Cli) -> None:
    r = initialised(
        "listener", "add", "p", "--protocol", "pop3", "--target", "h", "--target-user", "u",
        "--target-password-stdin", input=PASSWORD + "\n",
    )  # fmt: skip
    assert_one_line_error(r, 2, "--target-user")
    assert not initialised.secrets()["listener"]


def test_duplicate_and_unknown_names_exit_1(initialised: Cli) -> None:
    add(initialised, "a", "--protocol", "smtp", "--target", "h")
    r = initialised("listener", "add", "a", "--protocol", "smtp", "--target", "h")
    assert_one_line_error(r, 1, "already exists")
    for cmd in (["show", "nope"], ["set", "nope", "--port", "26"], ["remove", "nope"]):
        assert_one_line_error(initialised("listener", *cmd), 1, "no listener named 'nope'")


def test_stls_alias_and_ipv6_targets(initialised: Cli) -> None:
    add(initialised, "a", "--protocol", "pop3", "--target", "[::1]:1110", "--target-tls", "stls",
        "--client-tls", "STLS", "--listen", "::")  # fmt: skip
    add(initialised, "b", "--protocol", "smtp", "--target", "[2001:db8::25]")
    add(initialised, "c", "--protocol", "smtp", "--target", "2001:db8::26", "--port", "2526")
    a, b, c = initialised.toml()["listener"]
    assert (a["target_host"], a["target_port"], a["target_tls"], a["client_tls"]) == (
        "::1", 1110, "starttls", "starttls",
    )  # fmt: skip
    assert a["listen"] == "::"
    assert (b["target_host"], b["target_port"]) == ("2001:db8::25", 25)
    assert (c["target_host"], c["target_port"]) == ("2001:db8::26", 25)


def test_set_moves_default_ports_with_the_tls_mode(initialised: Cli) -> None:
    add(initialised, "s", "--protocol", "smtp", "--target", "h")
    add(initialised, "t", "--protocol", "smtp", "--target", "h:2525", "--port", "2500")
    for name in ("s", "t"):
        r = initialised("listener", "set", name, "--client-tls", "implicit", "--target-tls",
                        "implicit")  # fmt: skip
        assert r.exit_code == 0, r.output
    s, t = initialised.toml()["listener"]
    assert (s["port"], s["target_port"]) == (465, 465)  # defaults follow the mode
    assert (t["port"], t["target_port"]) == (2500, 2525)  # explicit ports stay


def test_set_target_ca_and_clear_it(initialised: Cli, tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    add(initialised, "s", "--protocol", "smtp", "--target", "h", "--target-ca", str(pem))
    assert initialised.toml()["listener"][0]["target_ca"] == str(pem.resolve())
    not_pem = tmp_path / "x.txt"
    not_pem.write_text("hello")
    r = initialised("listener", "set", "s", "--target-ca", str(not_pem))
    assert_one_line_error(r, 2, "--target-ca", "no PEM certificate")
    assert initialised("listener", "set", "s", "--target-ca", "").exit_code == 0
    assert "target_ca" not in initialised.toml()["listener"][0]


def test_password_from_stdin_is_stored_only_in_secrets(initialised: Cli) -> None:
    outputs = []
    r = initialised(
        "listener", "add", "out", "--protocol", "smtp", "--target", "smtp.example.net:587",
        "--target-tls", "starttls", "--target-user", "me@example.net",
        "--target-password-stdin", input=PASSWORD + "\n",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    outputs.append(r.output)
    assert initialised.secrets() == {"listener": {"out": {"target_password": PASSWORD}}}
    assert stat.S_IMODE(initialised.secrets_path.stat().st_mode) == 0o600
    assert initialised.toml()["listener"][0]["target_user"] == "me@example.net"

    show = initialised("listener", "show", "out")
    assert "target_password: set" in show.stdout
    show_json = initialised("listener", "show", "out", "--json")
    assert json.loads(show_json.stdout)["target_password"] == "set"
    for args in (["listener", "list"], ["listener", "list", "--json"], ["status"],
                 ["status", "--json"]):  # fmt: skip
        outputs.append(initialised(*args).output)
    outputs += [show.output, show_json.output]

    # Changing another option keeps the stored password without asking again.
    r = initialised("listener", "set", "out", "--port", "2525")
    assert r.exit_code == 0, r.output
    outputs.append(r.output)
    assert initialised.secrets()["listener"]["out"]["target_password"] == PASSWORD

    # A new password replaces the old one.
    r = initialised("listener", "set", "out", "--target-password-stdin", input="other\n")
    assert r.exit_code == 0, r.output
    outputs.append(r.output)
    assert initialised.secrets()["listener"]["out"]["target_password"] == "other"

    for out in outputs:
        assert PASSWORD not in out and "other" not in out
    assert PASSWORD not in initialised.config_path.read_text()
    assert stat.S_IMODE(initialised.secrets_path.stat().st_mode) == 0o600

    r = initialised("listener", "remove", "out")
    assert r.exit_code == 0
    assert initialised.secrets() == {"listener": {}}


def test_empty_stdin_password_is_refused(initialised: Cli) -> None:
    r = initialised(
        "listener", "add", "out", "--protocol", "smtp", "--target", "h", "--target-user", "u",
        "--target-password-stdin", input="\n",
    )  # fmt: skip
    assert_one_line_error(r, 2, "--target-password-stdin")
    assert "listener" not in initialised.toml()


def test_clearing_target_user_drops_the_password(initialised: Cli) -> None:
    add(initialised, "out", "--protocol", "smtp", "--target", "h", "--target-user", "u",
        "--target-password-stdin", input=PASSWORD + "\n")  # fmt: skip
    r = initialised("listener", "set", "out", "--target-user", "")
    assert r.exit_code == 0, r.output
    assert "target_user" not in initialised.toml()["listener"][0]
    assert initialised.secrets() == {"listener": {}}
    show = initialised("listener", "show", "out")
    assert "target_password: not set" in show.stdout


def test_password_kept_in_secrets_can_be_used(initialised: Cli) -> None:
    # An operator may write secrets.toml by hand first, then add the listener.
    initialised.secrets_path.write_text('[listener.out]\ntarget_password = "hand"\n')
    add(initialised, "out", "--protocol", "smtp", "--target", "h", "--target-user", "u")
    assert initialised.secrets()["listener"]["out"]["target_password"] == "hand"
    assert stat.S_IMODE(initialised.secrets_path.stat().st_mode) == 0o600


def test_port_clash_is_refused(initialised: Cli) -> None:
    add(initialised, "a", "--protocol", "smtp", "--target", "h", "--port", "2525")
    r = initialised("listener", "add", "b", "--protocol", "smtp", "--target", "h", "--port",
                    "2525")  # fmt: skip
    assert r.exit_code == 2
    assert "'a' already listens on 0.0.0.0 port 2525" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert [x["name"] for x in initialised.toml()["listener"]] == ["a"]


def test_config_changes_are_in_the_audit_log_without_the_password(initialised: Cli) -> None:
    import sqlite3

    from archive.store import Archive

    state = initialised.config_path.parent / "state"
    Archive(state).close()  # the catalog exists once the service or `ingest` ran
    r = initialised(
        "listener", "add", "out", "--protocol", "smtp", "--target", "smtp.example.net:587",
        "--target-user", "me@example.net", "--target-password-stdin", input=PASSWORD + "\n",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert initialised("listener", "set", "out", "--port", "2525").exit_code == 0
    assert initialised("listener", "remove", "out").exit_code == 0
    assert initialised("tls", "self-signed", "--hostname", "gw.example.org").exit_code == 0
    with sqlite3.connect(state / "archive" / "catalog.sqlite") as db:
        rows = db.execute("SELECT action, detail FROM audit ORDER BY id").fetchall()
    actions = [a for a, _ in rows]
    assert actions == ["listener.add", "listener.set", "listener.remove", "tls.self-signed"]
    add = json.loads(rows[0][1])
    assert add["name"] == "out" and add["target_user"] == "me@example.net"
    assert add["target_password"] == "changed"
    assert json.loads(rows[1][1])["port"] == 2525
    assert all(PASSWORD not in d for _, d in rows)
