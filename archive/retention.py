"""Report retention: the report directory is a hand-over point, not a second archive.

Once ingest has committed a pair to the archive (catalog row, blob and index document
durable), the pair is removed when `report_retention` has passed (default "5m": long
enough for an operator to look at a fresh report, short enough that the folder is no
second copy of the mail; "0" removes it right after ingest, "7d" keeps a week). A
report whose outcome is still "pending" (the upstream's verdict is in doubt) is kept
until the outcome arrives, or at least `PENDING_GRACE` after it was written, so a late
verdict still reaches the catalog.
Order of removal: the `.mpr` first, then the `.eml` (a crash in between leaves an `.eml`
without report, which the next start removes as work in progress).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DEFAULT_RETENTION = "5m"
#: how long an ingested report still "pending" is kept waiting for its outcome
PENDING_GRACE = 3600.0
#: with a retention period, how often the directory is swept for expired pairs
SWEEP_INTERVAL = 60.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> float:
    """ "0", "90s", "30m", "12h", "7d", "2w" -> seconds. ValueError otherwise."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration (e.g. 0, 12h, 7d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _remove_pair(reports_dir: Path, stem: str) -> bool:
    try:
        (reports_dir / f"{stem}.mpr").unlink()
    except FileNotFoundError:
        return False
    except OSError:
        return False
    try:
        (reports_dir / f"{stem}.eml").unlink(missing_ok=True)
    except OSError:
        pass
    return True


def after_ingest(reports_dir: Path, ingested: Iterable[tuple[str, str]], retention: float) -> int:
    """Remove the pairs just committed to the archive (retention 0). Returns the count."""
    if retention > 0:
        return 0
    return sum(
        _remove_pair(reports_dir, stem) for stem, outcome in ingested if outcome != "pending"
    )


def sweep(
    reports_dir: Path,
    known: dict[str, tuple[int, int]],
    pending: set[str],
    retention: float,
) -> int:
    """Remove ingested pairs (state as recorded in the catalog) past their time."""
    now = time.time_ns()
    removed = 0
    try:
        entries = list(os.scandir(reports_dir))
    except OSError:
        return 0
    for e in entries:
        if e.name.startswith(".") or not e.name.endswith(".mpr"):
            continue
        stem = e.name[:-4]
        try:
            st = e.stat()
        except OSError:
            continue
        if known.get(stem) != (st.st_mtime_ns, st.st_size):
            continue  # not ingested as it is now
        age = (now - st.st_mtime_ns) / 1e9
        if age >= (max(retention, PENDING_GRACE) if stem in pending else retention):
            removed += _remove_pair(reports_dir, stem)
    return removed


def retention_status(state_dir: Path, config: Any) -> dict[str, Any]:
    """For `status`: the setting and how many report files the folder holds."""
    text = str(getattr(config, "report_retention", DEFAULT_RETENTION))
    count = 0
    try:
        with os.scandir(state_dir / "reports") as it:
            count = sum(1 for e in it if e.name.endswith(".mpr") and not e.name.startswith("."))
    except OSError:
        pass
    seconds = parse_duration(text)
    return {
        "report_retention": text,
        "report_retention_note": (
            "reports are removed once archived"
            if seconds == 0
            else f"reports are removed {text} after they are archived"
        ),
        "reports_in_folder": count,
    }
