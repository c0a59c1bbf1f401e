"""Issue 15 acceptance, IMAP: `proxy-admin pull` against a real Dovecot IMAP server.

The big test (5,000 messages, three users, nested folders including Japanese names)
follows one archive through its life: first pull archives everything, a second pull
nothing, new mail in two folders is picked up, a UIDVALIDITY reset produces no
duplicates, and Dovecot's \\Seen flags are the same afterwards as before. The fault
tests use their own server (2,000 messages): the imap process is killed mid-FETCH, and
`proxy-admin pull` itself is SIGKILLed mid-run; each rerun archives exactly the missing
messages (one report per message, one archive copy each).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from admin.config import Config, MailboxConfig, Secrets
from archive.pull.runner import pull_mailboxes
from fixtures.dovecot_imap import DovecotImapServer, start_dovecot_imap
from fixtures.pull import PullCli, imap_count, imap_flags, message

pytestmark = pytest.mark.e2e

USERS = {"alice": "alice-Pw-1", "bob": "bob-Pw-2", "carol": "carol-Pw-3"}
#: 5,000 messages in all (the issue's figure)
LAYOUT = {
    "alice": {"INBOX": 1500, "Archive": 200, "Archive/2024": 800, "Archive/2024/Q1": 500,
              "受信箱/請求書": 500},
    "bob": {"INBOX": 600, "プロジェクト/進行中": 400},
    "carol": {"INBOX": 400, "Sent": 100},
}  # fmt: skip
TOTAL = sum(sum(f.values()) for f in LAYOUT.values())


@pytest.fixture(scope="module")
def imap5000() -> Iterator[DovecotImapServer]:
    with start_dovecot_imap(users=USERS) as srv:
        for user, folders in LAYOUT.items():
            for folder, n in folders.items():
                for i in range(n):
                    srv.add(user, folder, message(user, folder, i), seen=i % 3 == 0)
        yield srv


def _setup(tmp_path: Path, srv: DovecotImapServer) -> PullCli:
    cli = PullCli(tmp_path)
    cli.init()
    for user, pw in USERS.items():
        cli.add_imap(user, srv.imap_port, user, pw, "--archive-user", user)
    return cli


def test_pull_5000_then_incremental_then_uidvalidity_reset(
    tmp_path: Path, imap5000: DovecotImapServer
) -> None:
    """The issue's first acceptance item, end to end through the CLI (the big test)."""
    assert TOTAL == 5000
    srv = imap5000
    before = {u: imap_flags(srv.imap_port, u, pw) for u, pw in USERS.items()}
    cli = _setup(tmp_path, srv)

    first = cli.pull()
    assert first["ok"] and first["new"] == TOTAL
    by_box = {m["name"]: m for m in first["mailboxes"]}
    assert by_box["alice"]["folders"] == LAYOUT["alice"]
    assert by_box["bob"]["folders"] == LAYOUT["bob"]
    # the pull ingested: every message once in the archive, one report each
    assert cli.catalog("SELECT COUNT(*) FROM messages")[0][0] == TOTAL
    assert cli.catalog("SELECT COUNT(*) FROM reports")[0][0] == TOTAL
    # provenance: folder path (decoded from modified UTF-7) and mailbox are searchable
    assert cli.search("folder:受信箱/請求書")["total"] == 500
    assert cli.search("folder:受信箱")["total"] == 500
    assert cli.search("folder:Archive")["total"] == 1500  # with its subfolders
    assert cli.search("folder:archive/2024/q1")["total"] == 500
    assert cli.search("mailbox:bob folder:プロジェクト/進行中")["total"] == 400
    # the archive user owns the mailbox's mail
    assert cli.search("", "--user", "carol")["total"] == 500
    rows = cli.catalog(
        "SELECT protocol, direction, mailbox, folder FROM reports WHERE folder = ? LIMIT 1",
        ["プロジェクト/進行中"],
    )
    assert rows == [("imap", "archived", "bob", "プロジェクト/進行中")]

    second = cli.pull()
    assert second["ok"] and second["new"] == 0

    srv.add("alice", "Archive/2024/Q1", message("alice", "new", 1))
    srv.add("alice", "Archive/2024/Q1", message("alice", "new", 2))
    srv.add("bob", "プロジェクト/進行中", message("bob", "new", 3))
    third = cli.pull()
    assert third["new"] == 3
    by_box = {m["name"]: m for m in third["mailboxes"]}
    assert by_box["alice"]["folders"] == {"Archive/2024/Q1": 2}
    assert by_box["bob"]["folders"] == {"プロジェクト/進行中": 1}
    assert cli.catalog("SELECT COUNT(*) FROM messages")[0][0] == TOTAL + 3

    old_uv = _uidvalidity(srv, "alice", "Archive/2024")
    srv.reset_uidvalidity("alice", "Archive/2024")
    assert _uidvalidity(srv, "alice", "Archive/2024") != old_uv
    fourth = cli.pull()
    alice = {m["name"]: m for m in fourth["mailboxes"]}["alice"]
    assert alice["ok"] and alice["new"] == 0 and alice["known"] == 800
    assert cli.catalog("SELECT COUNT(*) FROM messages")[0][0] == TOTAL + 3
    assert cli.catalog("SELECT COUNT(*) FROM reports")[0][0] == TOTAL + 3
    assert cli.pull()["new"] == 0  # the new UIDs are remembered

    after = {u: imap_flags(srv.imap_port, u, pw) for u, pw in USERS.items()}
    for user in ("bob", "carol"):
        old = before[user]
        assert {k: after[user][k] for k in old} == old  # \Seen untouched
    # alice's reset folder has new UIDs: compare the flag counts per folder instead
    assert _seen_count(after["alice"]) == _seen_count(before["alice"])
    for pw in USERS.values():
        assert not _reports_mention(cli, pw)
        assert pw not in str((first, second, third, fourth))


def _uidvalidity(srv: DovecotImapServer, user: str, folder: str) -> int:
    from imapclient import IMAPClient

    with IMAPClient("127.0.0.1", port=srv.imap_port, ssl=False) as c:
        c.login(user, USERS[user])
        return int(c.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])


def _seen_count(flags: dict) -> int:
    return sum(1 for f in flags.values() if b"\\Seen" in f)


def _reports_mention(cli: PullCli, secret: str) -> bool:
    for p in (cli.state / "reports").glob("*.mpr"):
        if secret in p.read_text():
            return True
    return False


# --- faults ---------------------------------------------------------------------------

FAULT_USER, FAULT_PW = "dave", "dave-Pw-4"
FAULT_FOLDERS = {"INBOX": 1200, "Projects/Alpha": 800}
FAULT_TOTAL = sum(FAULT_FOLDERS.values())


@pytest.fixture(scope="module")
def imap_faults() -> Iterator[DovecotImapServer]:
    with start_dovecot_imap(users={FAULT_USER: FAULT_PW}) as srv:
        for folder, n in FAULT_FOLDERS.items():
            for i in range(n):
                srv.add(FAULT_USER, folder, message(FAULT_USER, folder, i))
        yield srv


def _fault_config(state: Path, srv: DovecotImapServer) -> tuple[Config, Secrets]:
    box = MailboxConfig(
        name="dave", protocol="imap", server="127.0.0.1", port=srv.imap_port, tls="none",
        user=FAULT_USER,
    )  # fmt: skip
    return Config(mailbox=[box]), Secrets(mailbox={"dave": {"password": FAULT_PW}})


def _assert_exactly_once(cli: PullCli) -> None:
    assert cli.catalog("SELECT COUNT(*) FROM messages")[0][0] == FAULT_TOTAL
    # one report per message: nothing was archived twice
    assert cli.catalog("SELECT COUNT(*) FROM reports")[0][0] == FAULT_TOTAL
    assert not cli.catalog("SELECT message FROM reports GROUP BY message HAVING COUNT(*) > 1")


def test_connection_drop_mid_fetch_then_rerun_archives_the_rest(
    tmp_path: Path, imap_faults: DovecotImapServer
) -> None:
    cli = PullCli(tmp_path)
    cli.init()
    config, secrets = _fault_config(cli.state, imap_faults)
    killed = []

    def progress(done: int, total: int) -> None:
        if done >= 400 and not killed:
            killed.append(imap_faults.kill_imap())

    results = pull_mailboxes(config, secrets, cli.state, progress_for=lambda _n: progress)
    assert killed and killed[0] >= 1
    r = results[0]
    assert not r.ok and r.error and FAULT_PW not in r.error
    assert 400 <= r.new < FAULT_TOTAL
    first = r.new
    again = pull_mailboxes(config, secrets, cli.state)[0]
    assert again.ok, again.error
    assert again.new == FAULT_TOTAL - first
    _assert_exactly_once(cli)


def test_sigkill_of_pull_mid_run_then_rerun_archives_exactly_the_missing(
    tmp_path: Path, imap_faults: DovecotImapServer
) -> None:
    cli = PullCli(tmp_path)
    cli.init()
    cli.add_imap("dave", imap_faults.imap_port, FAULT_USER, FAULT_PW)
    reports = cli.state / "reports"
    env = {**os.environ, "MAILTEE_CONFIG": str(cli.config_path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from admin.cli import main; main()", "pull"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while proc.poll() is None and len(list(reports.glob("*.mpr"))) < 300:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        rc = proc.wait()
    assert rc == -signal.SIGKILL, "pull finished before it could be killed"
    durable = len(list(reports.glob("*.mpr")))
    assert 300 <= durable < FAULT_TOTAL
    out = cli.pull()
    box = out["mailboxes"][0]
    assert box["ok"], box
    assert box["new"] == FAULT_TOTAL - durable  # exactly the missing ones
    _assert_exactly_once(cli)
    # nothing half-written: every committed pair's bytes match its report
    assert cli.catalog("SELECT COUNT(*) FROM reports WHERE size_ok = 0")[0][0] == 0
    assert imap_count(imap_faults.imap_port, FAULT_USER, FAULT_PW) == FAULT_TOTAL
