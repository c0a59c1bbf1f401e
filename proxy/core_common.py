"""`CoreCommon`: the bookkeeping both sans-IO relay cores keep the same way.

Theory of operation. `SmtpRelay` and `Pop3Relay` differ in their protocol, not in how
they talk to the driver. Each holds one `CoreCommon` (composition, not a base class:
the cores share no protocol logic) for the four things that must behave alike:

- the action queue: `emit(action)` appends, `take()` hands the driver everything in order;
- the "closed" guard: `close()` emits `Close` exactly once, `closed` says whether it has;
  every driver entry point of a closed core is a no-op;
- command counting: `count_command()` is False once a session exceeds `max_commands`
  (each core then logs and refuses in its own words; SMTP queues its 421 behind the
  replies still due, POP3 is lockstep and has none);
- the archive-failure policy: `archive_failed()` decides, from `on_archive_failure`,
  whether a message whose copy failed is relayed anyway ("pass") or refused ("reject",
  fail closed, DESIGN invariant 1), and logs the decision as an error.

No sockets, no clock, no threads (the cores' rule; tests/proxy/test_sans_io_imports.py).
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.actions import Action, Close, LogEvent
from proxy.settings import RelaySettings


def _same(message: str) -> str:
    return message


class CoreCommon:
    """The action queue, closed guard, command count and archive-failure policy of one core."""

    def __init__(self, settings: RelaySettings, scrub: Callable[[str], str] = _same) -> None:
        self.settings = settings
        self.closed = False
        self.commands = 0
        self._out: list[Action] = []
        #: queue one action (the list's own append: the cores call it per data chunk)
        self.emit: Callable[[Action], None] = self._out.append
        self._scrub = scrub  # SMTP: never log the injected credentials (proxy/scrub.py)

    # --- the action queue ---------------------------------------------------------
    def take(self) -> list[Action]:
        """Return and forget the queued actions, in order (`RelayCore.actions()`)."""
        out = self._out
        self._out = []
        self.emit = self._out.append
        return out

    def log(self, level: str, message: str) -> None:
        self._out.append(LogEvent(level, self._scrub(message)))

    # --- the closed guard ---------------------------------------------------------
    def close(self) -> bool:
        """End the session: emit `Close` the first time; True if this call closed it."""
        if self.closed:
            return False
        self.closed = True
        self._out.append(Close())
        return True

    # --- command counting ---------------------------------------------------------
    def count_command(self) -> bool:
        """Count one client command; False once the session is past `max_commands`."""
        self.commands += 1
        return self.commands <= self.settings.max_commands

    # --- the archive-failure policy -----------------------------------------------
    def archive_failed(self, relayed: str, refused: str) -> bool:
        """A copy failed: True to relay the message anyway (on_archive_failure = "pass"),
        False to refuse it (fail closed). Logs `relayed` or `refused` as an error: the
        operator must learn either way (the cores keep their own, documented wording)."""
        passed = self.settings.on_archive_failure == "pass"
        self.log("error", relayed if passed else refused)
        return passed
