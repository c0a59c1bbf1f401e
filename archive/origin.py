"""Search/ownership keys for where a pulled message came from (mailbox, folder, owner).

The index's `keys` field holds a message's ownership keys (addresses, `pop3:<account>`).
Pulled mail adds three kinds that can never collide with those (no `@`, not `pop3:`):
`mailbox:<name>` and `folder:<path>` (searchable as `mailbox:` / `folder:`, and the
folder once per ancestor so `folder:Archive` finds `Archive/2024` too), and
`user:<name>` for the mailbox's `archive_user`, which `search --user` includes.
Everything is derived from report columns, so an index rebuild recreates it.
"""

from __future__ import annotations

#: IMAP folder paths are stored with this hierarchy delimiter, whatever the server's
FOLDER_SEP = "/"


def folder_terms(folder: str) -> list[str]:
    """`Archive/2024/Q1` -> ["archive", "archive/2024", "archive/2024/q1"]."""
    parts = [p for p in folder.strip(FOLDER_SEP).split(FOLDER_SEP) if p]
    return [FOLDER_SEP.join(parts[: i + 1]).lower() for i in range(len(parts))]


def origin_keys(mailbox: str | None, folder: str | None, archive_user: str | None) -> set[str]:
    keys: set[str] = set()
    if mailbox:
        keys.add(f"mailbox:{mailbox.lower()}")
    if folder:
        keys.update(f"folder:{t}" for t in folder_terms(folder))
    if archive_user:
        keys.add(f"user:{archive_user}")
    return keys


def query_key(field: str, value: str) -> str:
    """The index term a `folder:`/`mailbox:` search clause looks for."""
    if field == "folder":
        terms = folder_terms(value)
        return f"folder:{terms[-1] if terms else ''}"
    return f"{field}:{value.lower()}"
