"""verify, compact, index rebuild, store list|seal: library and `proxy-admin` commands."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from maintenance_helpers import (
    APP,
    Cli,
    add_each,
    dated,
    flip_byte,
    one_line_error,
    row,
    search_ids,
    sql,
)

from archive import maintenance as mt
from archive.store import Archive

N = 8


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path)
    add_each(c.state, [dated(i) for i in range(1, N + 1)])
    return c


def audit_actions(state: Path) -> list[str]:
    return [r[0] for r in sql(state, "SELECT action FROM audit ORDER BY id")]


# --- verify ----------------------------------------------------------------------------


def test_verify_clean_archive(cli: Cli) -> None:
    out = cli.json("verify")
    assert out == {
        "ok": True,
        "store": None,
        "messages": N,
        "blobs_ok": N,
        "damaged": [],
        "unreferenced_blobs": 0,
        "index_orphans": 0,
        "notes": [],
    }
    r = cli("verify")
    assert r.exit_code == 0 and f"archive ok: {N} message(s) verified" in r.stdout
    assert "verify" in audit_actions(cli.state)


def test_verify_detects_a_flipped_pack_byte(cli: Cli) -> None:
    flip_byte(cli.state, 3)
    out = cli.json("verify", code=1)
    assert out["ok"] is False
    assert [d["id"] for d in out["damaged"]] == [3]
    assert out["blobs_ok"] == N - 1
    r = cli("verify")
    assert r.exit_code == 1
    assert "damaged: message 3:" in r.stdout
    assert "DAMAGED: 1 message(s): 3" in r.stderr
    # the other messages still read back
    with Archive(cli.state) as a:
        assert a.get_raw(4) == dated(4)


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("subject", "nothing to see here", "catalog subject"),
        ("sender", "mallory@example.com", "catalog sender"),
        ("size", 1, "does not match its SHA-256"),
        ("message_id", "<forged@example.com>", "catalog message_id"),
        ("date", 0, "catalog date"),
        ("report_hash", "00" * 32, "hash chain broken"),
        ("sha256", "ab" * 32, "hash chain broken"),
    ],
)
def test_verify_detects_an_edited_catalog_row(
    cli: Cli, column: str, value: object, needle: str
) -> None:
    sql(cli.state, f"UPDATE messages SET {column} = ? WHERE id = 5", (value,))
    out = cli.json("verify", code=1)
    assert [d["id"] for d in out["damaged"]] == [5]
    assert any(needle in p for p in out["damaged"][0]["problems"]), out["damaged"]


def test_verify_detects_an_edited_address_and_a_moved_row(cli: Cli) -> None:
    sql(
        cli.state,
        "UPDATE addresses SET address = 'eve@example.com' WHERE message = 2 AND kind = 'to'",
    )
    r6 = row(cli.state, 6)
    sql(cli.state, "UPDATE messages SET inner = inner + 1 WHERE id = 6")
    out = cli.json("verify", code=1)
    assert [d["id"] for d in out["damaged"]] == [2, 6]
    assert out["damaged"][0]["problems"] == ["catalog addresses do not match the archived message"]
    assert r6["inner"] == 0


def test_verify_detects_a_deleted_row(cli: Cli) -> None:
    sql(cli.state, "DELETE FROM messages WHERE id = 4")
    out = cli.json("verify", code=1)
    assert [d["id"] for d in out["damaged"]] == [5]  # the chain breaks at the next row
    assert out["unreferenced_blobs"] == 1  # and the pack holds a blob nobody points at


def test_verify_detects_a_message_missing_from_the_index(cli: Cli) -> None:
    with Archive(cli.state) as a, a.writing():
        a.index.begin()
        a.index.delete(row(cli.state, 7)["sha256"])
        a.index.commit()
    out = cli.json("verify", code=1)
    assert out["damaged"] == [
        {"id": 7, "problems": ["not in the search index (`proxy-admin index rebuild`)"]}
    ]
    assert cli.json("index", "rebuild") == {"messages": N}
    assert cli.json("verify")["ok"] is True
    assert 7 in search_ids(cli.state, "invoice")


def test_verify_missing_pack_file(cli: Cli) -> None:
    (cli.state / "archive" / "packs" / "pack-000001.mtp").unlink()
    out = cli.json("verify", code=1)
    assert [d["id"] for d in out["damaged"]] == list(range(1, N + 1))


# --- index rebuild ---------------------------------------------------------------------


QUERIES = ["invoice", "report", "quarterly numbers", "from:alice@example.com", "-report"]


def test_index_rebuild_gives_identical_search_results(cli: Cli) -> None:
    before = {q: search_ids(cli.state, q) for q in QUERIES}
    assert len(before["invoice"]) == N
    shutil.rmtree(cli.state / "archive" / "index")
    assert search_ids(cli.state, "invoice") == []
    r = cli("index", "rebuild")
    assert r.exit_code == 0 and f"indexed {N} message(s)" in r.stdout
    assert {q: search_ids(cli.state, q) for q in QUERIES} == before
    assert "index rebuild" in audit_actions(cli.state)


# --- compact ---------------------------------------------------------------------------


def test_compact_merges_chunks_and_keeps_everything(cli: Cli) -> None:
    with Archive(cli.state) as a:
        assert mt.record_count(a, 1) == N  # one record per ingest batch
    before = {q: search_ids(cli.state, q) for q in QUERIES}
    out = cli.json("compact")
    assert out["messages"] == N and out["removed_packs"] == [1]
    assert out["packs_before"] == out["packs_after"] == 1
    assert out["bytes_after"] < out["bytes_before"]
    with Archive(cli.state) as a:
        (number,) = a.packs.numbers()
        assert number == 2 and mt.record_count(a, 2) == 1
        for i in range(1, N + 1):
            assert a.get_raw(i) == dated(i)
    assert cli.json("verify")["ok"] is True
    assert {q: search_ids(cli.state, q) for q in QUERIES} == before
    assert cli.json("compact")["messages"] == 0  # nothing left to do
    assert cli("compact").stdout.strip() == "nothing to compact"
    # ingest carries on in the compacted pack
    add_each(cli.state, [dated(99, "after compact")])
    assert search_ids(cli.state, "subject:compact") == [N + 1]
    assert cli.json("verify")["ok"] is True
    assert "compact" in audit_actions(cli.state)


def test_compact_refuses_to_copy_damage(cli: Cli) -> None:
    flip_byte(cli.state, 2)
    r = cli("compact")
    one_line_error(r, 1, "message 2 is damaged")
    assert not (cli.state / "archive" / "compact.tmp").exists()
    with Archive(cli.state) as a:
        assert a.packs.numbers() == [1]


# --- stores ----------------------------------------------------------------------------


def test_store_seal_list_and_search_across_stores(cli: Cli) -> None:
    (store,) = cli.json("store", "list")["stores"]
    assert (store["id"], store["sealed"], store["current"], store["messages"]) == (
        1,
        False,
        True,
        N,
    )
    out = cli.json("store", "seal")
    assert out["sealed"]["id"] == 1 and out["sealed"]["sealed"] is True
    assert out["current"]["id"] == 2 and out["current"]["messages"] == 0
    pack1 = cli.state / "archive" / "packs" / "pack-000001.mtp"
    assert stat.S_IMODE(pack1.stat().st_mode) == 0o444
    add_each(cli.state, [dated(50, "second store"), dated(51, "second store too")])
    stores = cli.json("store", "list")["stores"]
    assert [(s["id"], s["sealed"], s["messages"], s["packs"]) for s in stores] == [
        (1, True, N, [1]),
        (2, False, 2, [2]),
    ]
    # search spans both stores
    assert sorted(search_ids(cli.state, "invoice")) == list(range(1, N + 3))
    # compact leaves the sealed store alone
    size = pack1.stat().st_size
    cli.json("compact")
    assert pack1.stat().st_size == size and stat.S_IMODE(pack1.stat().st_mode) == 0o444
    assert cli.json("verify")["ok"] is True
    # verify --store: damage in store 1 is seen by store 1 only
    os.chmod(pack1, 0o644)
    flip_byte(cli.state, 2)
    assert [d["id"] for d in cli.json("verify", "--store", "1", code=1)["damaged"]] == [2]
    assert cli.json("verify", "--store", "2")["messages"] == 2
    one_line_error(cli("verify", "--store", "9"), 1, "no store 9")
    table = cli("store", "list")
    assert table.stdout.splitlines()[0].split()[:4] == ["ID", "NAME", "STATE", "MESSAGES"]
    assert "store seal" in audit_actions(cli.state)


def test_sealing_an_empty_store_is_refused(cli: Cli) -> None:
    cli.json("store", "seal")
    one_line_error(cli("store", "seal"), 1, "is empty")


# --- CLI shape -------------------------------------------------------------------------


def test_usage_errors_exit_2(cli: Cli) -> None:
    r = cli("verify", "--store", "x")
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = cli("verify", "--store", "0")
    assert r.exit_code == 2


def test_every_command_has_help() -> None:
    from typer.main import get_command

    root = get_command(APP)
    names = ["verify", "compact", "index", "store", "backup", "restore"]
    for name in names:
        cmd = root.commands[name]  # type: ignore[attr-defined]
        assert cmd.help, name
        for sub in getattr(cmd, "commands", {}).values():
            assert sub.help, f"{name} {sub.name}"


def test_json_is_stable_text(cli: Cli) -> None:
    r = cli("verify", "--json")
    assert json.loads(r.stdout)["ok"] is True
    assert r.stdout.startswith(
        '{\n  "blobs_ok": 8,\n  "damaged": [],'
    )  # sorted keys, 2-space indent


def test_maintenance_commands_exclude_each_other_but_not_ingest(cli: Cli, tmp_path: Path) -> None:
    with Archive(cli.state) as a:
        with mt.maintenance_lock(a, shared=True):  # e.g. a backup in another process
            one_line_error(cli("compact"), 1, "another maintenance command")
            one_line_error(cli("store", "seal"), 1, "another maintenance command")
            assert cli.json("verify")["ok"] is True  # readers share
        with a.writing():  # ingest holds the write lock: backup and verify carry on
            assert cli.json("backup", str(tmp_path / "bk"))["messages"] == N
            assert cli.json("verify")["ok"] is True


def test_verify_failure_mails_an_alert(cli: Cli) -> None:
    """Issue 6: a verify failure is an alert, mailed through the configured relay."""
    import socket
    import tomllib

    import tomli_w
    from aiosmtpd.controller import Controller

    received: list[bytes] = []

    class Sink:
        async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
            received.append(envelope.original_content)
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = Controller(Sink(), hostname="127.0.0.1", port=port)
    sink.start()
    try:
        data = tomllib.loads(cli.config.read_text())
        data["alerts"] = {"smtp_host": "127.0.0.1", "smtp_port": port, "to": ["ops@example.com"]}
        cli.config.write_text(tomli_w.dumps(data))
        flip_byte(cli.state, 3)
        assert cli("verify").exit_code == 1
    finally:
        sink.stop()
    assert len(received) == 1
    assert b"damaged message" in received[0] and b"message ids: 3" in received[0]
