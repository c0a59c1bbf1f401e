"""Reading the report directory: which `.eml` + `.mpr` pairs are committed and changed.

A pair is committed once its `.mpr` exists under its final name (the spool renames the
`.eml` first, then the `.mpr`). Dot-files are work in progress and are never read; a
`.eml` without `.mpr` is not committed yet. A report whose `.mpr` (mtime, size) differs
from what the catalog recorded is pending: new, or rewritten (outcome pending ->
delivered). The `.mpr` is read through one descriptor and fstat'ed on it, so the recorded
(mtime, size) always belongs to the bytes that were ingested.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archive.errors import ArchiveError
from archive.sqltx import read_only_rows

from .origin import origin_keys

STEM_RE = re.compile(
    r"^(?P<stamp>\d{8}T\d{6}Z)-(?P<protocol>[a-z0-9][a-z0-9-]*?)-"
    r"(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)


class ReportError(ArchiveError):
    """A report pair that cannot be ingested (unreadable, not a mailtee-mpr document)."""


@dataclass(frozen=True, slots=True)
class ReportRef:
    stem: str
    mpr: Path
    eml: Path
    state: tuple[int, int]  # (mtime_ns, size) from the directory scan


@dataclass(slots=True)
class Provenance:
    """Everything about one sighting of a message except its bytes."""

    uuid: str
    row: dict[str, Any]  # columns of the `reports` table
    report_hash: str  # sha256 of the report document (chain input)
    expected_sha256: str | None = None
    expected_size: int | None = None
    keys: frozenset[str] = frozenset()  # envelope ownership keys (rcpt, pop3 account)


def scan(
    reports_dir: Path,
    known: dict[str, tuple[int, int]],
    watch: set[str] | None = None,
) -> list[ReportRef]:
    """Committed pairs whose `.mpr` state differs from `known`, oldest first.

    With `watch`, only new stems and the stems in `watch` (reports still `pending`, which
    the spool rewrites) are stat'ed; the caller does a full scan now and then.
    """
    try:
        entries = list(os.scandir(reports_dir))
    except FileNotFoundError:
        return []
    out = []
    for e in entries:
        name = e.name
        if name.startswith(".") or not name.endswith(".mpr"):
            continue
        stem = name[:-4]
        if watch is not None and stem in known and stem not in watch:
            continue
        if not STEM_RE.match(stem):
            continue
        try:
            st = e.stat()
        except OSError:
            continue
        state = (st.st_mtime_ns, st.st_size)
        if known.get(stem) != state:
            out.append(ReportRef(stem, Path(e.path), reports_dir / f"{stem}.eml", state))
    out.sort(key=lambda r: r.stem)
    return out


def backlog(state_dir: Path) -> int | None:
    """Report pairs waiting for ingest (new, or rewritten since they were ingested).

    For `status`: reads the catalog read-only, never creates it. None when there is no
    report directory.
    """
    reports_dir = state_dir / "reports"
    if not reports_dir.is_dir():
        return None
    rows = read_only_rows(
        state_dir / "archive" / "catalog.sqlite",
        "SELECT stem, mpr_mtime_ns, mpr_size FROM reports WHERE stem IS NOT NULL",
    )
    # no or an unreadable catalog: every report counts as waiting
    known = {stem: (mtime, size) for stem, mtime, size in rows or []}
    return len(scan(reports_dir, known))


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def read_report(ref: ReportRef) -> tuple[Provenance, tuple[int, int]]:
    """Parse the `.mpr`; returns the provenance and the (mtime_ns, size) actually read."""
    try:
        with open(ref.mpr, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except OSError as e:
        raise ReportError(f"{ref.mpr.name}: cannot read: {e.strerror}") from None
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ReportError(f"{ref.mpr.name}: not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != "mailtee-mpr":
        raise ReportError(f"{ref.mpr.name}: not a mailtee-mpr report")
    if doc.get("version") != 1:
        raise ReportError(f"{ref.mpr.name}: unsupported version {doc.get('version')!r}")
    prov = provenance_from_doc(doc, data)
    prov.row["stem"] = ref.stem
    prov.row["source"] = str(ref.mpr.parent)
    prov.row["mpr_mtime_ns"] = st.st_mtime_ns
    prov.row["mpr_size"] = st.st_size
    return prov, (st.st_mtime_ns, st.st_size)


def provenance_from_doc(doc: dict[str, Any], data: bytes) -> Provenance:
    m = STEM_RE.match(f"00000000T000000Z-x-{doc.get('id', '')}")
    if not m:
        raise ReportError(f"report id {doc.get('id')!r} is not a UUID")

    def section(name: str) -> dict[str, Any]:
        v = doc.get(name)
        return v if isinstance(v, dict) else {}

    client, target, smtp, pop3 = (section(n) for n in ("client", "target", "smtp", "pop3"))
    upstream, pull = section("upstream"), section("pull")
    rcpts = smtp.get("rcpt_to") or []
    if not isinstance(rcpts, list):
        rcpts = []
    # pulled mail: owners recovered from a multidrop mailbox's headers count as recipients
    recovered = pull.get("recipients")
    if isinstance(recovered, list):
        rcpts = list(dict.fromkeys([*rcpts, *recovered]))
    outcome = upstream.get("outcome")
    if outcome not in ("pending", "delivered", "rejected", "unknown"):
        outcome = "unknown"
    keys = {str(r).strip().strip("<>").lower() for r in rcpts if r}
    if smtp.get("mail_from"):
        keys.add(str(smtp["mail_from"]).strip().strip("<>").lower())
    if pop3.get("user"):
        keys.add(f"pop3:{str(pop3['user']).lower()}")
    keys |= origin_keys(
        _str(pull.get("mailbox")), _str(pull.get("folder")), _str(pull.get("archive_user"))
    )
    row = {
        "uuid": doc["id"],
        "protocol": _str(doc.get("protocol")),
        "direction": _str(doc.get("direction")),
        "listener": _str(doc.get("listener")),
        "received_at": _str(doc.get("received_at")),
        "client_ip": _str(client.get("ip")),
        "client_port": client.get("port") if isinstance(client.get("port"), int) else None,
        "client_tls": _str(client.get("tls")),
        "target_host": _str(target.get("host")),
        "pop3_user": _str(pop3.get("user")),
        "pop3_uidl": _str(pop3.get("uidl") or pull.get("uidl")),
        "smtp_helo": _str(smtp.get("helo")),
        "mail_from": _str(smtp.get("mail_from")),
        "rcpt_to": json.dumps([str(r) for r in rcpts], ensure_ascii=False),
        "auth_user": _str(smtp.get("auth_user")),
        "outcome": outcome,
        "reply": _str(upstream.get("reply")),
        "mpr_sha256": hashlib.sha256(data).hexdigest(),
    }
    if pull:
        row["mailbox"] = _str(pull.get("mailbox"))
        row["folder"] = _str(pull.get("folder"))
        row["archive_user"] = _str(pull.get("archive_user"))
        row["target_host"] = row["target_host"] or _str(pull.get("server"))
    return Provenance(
        uuid=doc["id"],
        row=row,
        # The chain covers the report as first seen, minus the outcome that may change.
        report_hash=_stable_hash(doc),
        expected_sha256=_str(doc.get("sha256")),
        expected_size=doc.get("size") if isinstance(doc.get("size"), int) else None,
        keys=frozenset(k for k in keys if k and k != "pop3:"),
    )


def _stable_hash(doc: dict[str, Any]) -> str:
    stable = {k: v for k, v in doc.items() if k != "upstream"}
    blob = json.dumps(stable, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


# --- what ingest consumes and reports (archive/ingest.py) -----------------------------


@dataclass(slots=True)
class Item:
    prov: Provenance
    raw: bytes


@dataclass
class IngestStats:
    reports: int = 0  # report pairs / imported files processed
    new_messages: int = 0
    duplicates: int = 0  # sightings of a message already archived (provenance only)
    updated_reports: int = 0  # rewritten reports (e.g. outcome pending -> delivered)
    bytes: int = 0
    pending: int = 0  # still waiting after this call (max_items reached)
    errors: list[str] = field(default_factory=list)
    #: (stem, outcome) of every report pair committed by this call (archive.retention)
    ingested: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: IngestStats) -> None:
        self.reports += other.reports
        self.new_messages += other.new_messages
        self.duplicates += other.duplicates
        self.updated_reports += other.updated_reports
        self.bytes += other.bytes
        self.errors.extend(other.errors)
        self.ingested.extend(other.ingested)

    def as_dict(self) -> dict[str, object]:
        return {
            "reports": self.reports,
            "new_messages": self.new_messages,
            "duplicates": self.duplicates,
            "updated_reports": self.updated_reports,
            "bytes": self.bytes,
            "pending": self.pending,
            "errors": list(self.errors),
        }
