"""Helpers for the maintenance tests: a small `proxy-admin` with the maintenance commands."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Annotated, Any

import typer
from archive_helpers import make_message, write_report
from typer.testing import CliRunner

import admin.cli_archive as cli_archive
import admin.cli_maintenance as cli_maintenance
from admin.cli import app as full_app
from admin.cli_common import CliContext, ProxyAdminGroup
from archive.store import Archive


def build_app() -> typer.Typer:
    app = typer.Typer(cls=ProxyAdminGroup, name="proxy-admin", add_completion=False)

    @app.callback()
    def _root(
        ctx: typer.Context,
        config: Annotated[Path, typer.Option("--config")],
    ) -> None:
        ctx.obj = CliContext(config)

    cli_archive.register(app)
    cli_maintenance.register(app)
    return app


APP = build_app()


class Cli:
    """`proxy-admin --config <tmp>/etc/config.toml ...` in-process; state dir relative."""

    def __init__(self, tmp: Path, *, init: bool = True) -> None:
        self.config = tmp / "etc" / "config.toml"
        self.runner = CliRunner()
        if init:
            r = self.runner.invoke(
                full_app, ["--config", str(self.config), "init", "--state-dir", "state"]
            )
            assert r.exit_code == 0, r.output

    @property
    def state(self) -> Path:
        return self.config.parent / "state"

    def __call__(self, *args: str) -> Any:
        return self.runner.invoke(APP, ["--config", str(self.config), *args])

    def json(self, *args: str, code: int = 0) -> Any:
        r = self(*args, "--json")
        assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
        return json.loads(r.stdout)


def one_line_error(r: Any, code: int, needle: str) -> None:
    assert r.exit_code == code, (r.exit_code, r.output)
    assert "Traceback" not in r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("proxy-admin: error: "), r.stderr
    assert needle in lines[0], lines[0]


def dated(i: int, subject: str | None = None, body: str | None = None) -> bytes:
    """Message i with a distinct Date (so search order is fully determined)."""
    return make_message(
        subject or f"report {i}",
        body or f"quarterly numbers {i} invoice",
        date=f"Tue, 24 Nov 2026 {i // 60 % 24:02d}:{i % 60:02d}:00 +0000",
        msgid=f"<m{i}@example.com>",
    )


def add_each(state: Path, raws: list[bytes]) -> None:
    """Ingest each message in its own batch, so each gets its own pack record."""
    for raw in raws:
        write_report(state / "reports", raw)
        with Archive(state) as a:
            a.ingest_pending(state / "reports")


def search_ids(state: Path, query: str = "", limit: int = 10_000) -> list[int]:
    with Archive(state) as a:
        return [h.id for h in a.search(query, limit=limit)]


def row(state: Path, message: int) -> sqlite3.Row:
    conn = sqlite3.connect(state / "archive" / "catalog.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM messages WHERE id = ?", (message,)).fetchone()
    finally:
        conn.close()


def sql(state: Path, statement: str, params: tuple = ()) -> list[Any]:
    conn = sqlite3.connect(state / "archive" / "catalog.sqlite", isolation_level=None)
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


def flip_byte(state: Path, message: int) -> None:
    """Flip one byte inside the compressed frame of `message`'s pack record."""
    r = row(state, message)
    path = state / "archive" / "packs" / f"pack-{r['pack']:06d}.mtp"
    at = r["offset"] + r["length"] - 3  # inside the zstd frame, before its end
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))
