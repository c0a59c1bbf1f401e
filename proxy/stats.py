"""The service's counters that sessions update and `status`, the control socket and the
alert watcher read (one object per service process, shared by its sessions).

A dataclass rather than a shared `dict[str, Any]`: the fields are named once, typed, and
a misspelt key is a mypy error instead of a counter that silently stays 0. Only the
Trio thread touches it (sessions and the watcher run on one event loop), so no lock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServiceStats:
    #: messages whose copy could not be made durable (each refused to the peer)
    archive_failures: int = 0
    #: why the last one failed (one line, no secrets), for `status` and the alert mail
    last_error: str | None = None

    def archive_failed(self, error: str) -> None:
        self.archive_failures += 1
        self.last_error = error
