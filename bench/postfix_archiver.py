"""A private Postfix instance configured as the archiving relay an administrator would
build instead of mailtee: `always_bcc` to an archive sink, `relayhost` to the main sink,
its ordinary durable queue (Postfix fsyncs every queue file before it answers 250).

Own config dir (`postfix -c DIR`), own queue, loopback ports only, maillog in the
instance directory; the system's Postfix is untouched. Needs root (Postfix refuses a
non-default config directory otherwise). Deliveries are counted from the maillog
(`status=sent`, one line per delivered copy), so "end to end" means both sinks have the
message. The instance itself (files, permissions, start, stop) is the test fixture's
`PostfixServer` (tests/fixtures/postfix.py); this module adds the archiving set-up.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import work_dir  # noqa: E402

from fixtures.postfix import LOOPBACK, POSTFIX, PostfixError, PostfixServer  # noqa: E402

ARCHIVE_DOMAIN = "archive.bench"

_SENT = re.compile(rb"status=sent")


class PostfixArchiver:
    def __init__(
        self,
        port: int,
        main_sink: int,
        archive_sink: int,
        parent: Path,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.port = port
        # its own block group: Postfix deletes a queue file per message (_common.work_dir)
        self.root = work_dir(parent, "mailtee-bench-postfix-")
        self.root.chmod(0o755)  # the postfix user walks into queue/ and data/
        self.server = PostfixServer(root=self.root, port=port)
        self.maillog = self.server.log_path
        self._relay_to = (LOOPBACK, main_sink)
        self._main_cf = {
            "myhostname": "postfix.bench",
            "always_bcc": f"copy@{ARCHIVE_DOMAIN}",
            "transport_maps": f"inline:{{{ARCHIVE_DOMAIN}=smtp:[{LOOPBACK}]:{archive_sink}}}",
            "default_process_limit": "200",
        }
        if tls is not None:  # STARTTLS offered to clients, as mailtee's starttls listener
            self._main_cf["smtpd_tls_cert_file"] = str(tls[0])
            self._main_cf["smtpd_tls_key_file"] = str(tls[1])
            self._main_cf["smtpd_tls_security_level"] = "may"

    def start(self) -> None:
        try:
            self.server.start(self._relay_to, self._main_cf, ())
        except PostfixError as e:
            raise RuntimeError(f"postfix did not start: {str(e)[-2000:]}") from None

    def sent(self) -> int:
        """Copies delivered to either sink so far (maillog `status=sent` lines)."""
        try:
            return len(_SENT.findall(self.maillog.read_bytes()))
        except OSError:
            return 0

    def wait_sent(self, count: int, timeout: float = 600.0) -> float | None:
        """Wait until `count` copies are delivered; the monotonic time it happened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sent() >= count:
                return time.monotonic()
            time.sleep(0.02)
        return None

    def master_pid(self) -> int | None:
        try:
            return int((self.server.queue_dir / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def available() -> bool:
    return os.geteuid() == 0 and os.access(POSTFIX, os.X_OK)
