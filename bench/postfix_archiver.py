"""A private Postfix instance configured as the archiving relay an administrator would
build instead of mailtee: `always_bcc` to an archive sink, `relayhost` to the main sink,
its ordinary durable queue (Postfix fsyncs every queue file before it answers 250).

Own config dir (`postfix -c DIR`), own queue, loopback ports only, maillog in the
instance directory; the system's Postfix is untouched. Needs root (Postfix refuses a
non-default config directory otherwise). Deliveries are counted from the maillog
(`status=sent`, one line per delivered copy), so "end to end" means both sinks have the
message. (The layout follows the test fixture idea; bench code stays in bench/.)
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
LOOPBACK = "127.0.0.1"
ARCHIVE_DOMAIN = "archive.bench"

_MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
proxywrite unix - - n -  1 proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

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
        self.root = Path(tempfile.mkdtemp(prefix="mailtee-bench-postfix-", dir=parent))
        self.root.chmod(0o755)
        self.etc, self.queue = self.root / "etc", self.root / "queue"
        self.maillog = self.root / "maillog"
        params = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.root / "data"),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench",
            "mydestination": "",
            "inet_interfaces": LOOPBACK,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "alias_maps": "",
            "local_recipient_maps": "",
            "smtp_dns_support_level": "disabled",
            "disable_dns_lookups": "yes",
            "relayhost": f"[{LOOPBACK}]:{main_sink}",
            "always_bcc": f"copy@{ARCHIVE_DOMAIN}",
            "transport_maps": f"inline:{{{ARCHIVE_DOMAIN}=smtp:[{LOOPBACK}]:{archive_sink}}}",
            "smtp_tls_security_level": "none",
            "smtpd_error_sleep_time": "0",
            "default_process_limit": "200",
        }
        if tls is not None:  # STARTTLS offered to clients, as mailtee's starttls listener
            params["smtpd_tls_cert_file"] = str(tls[0])
            params["smtpd_tls_key_file"] = str(tls[1])
            params["smtpd_tls_security_level"] = "may"
        self.etc.mkdir()
        (self.root / "data").mkdir()
        self.queue.mkdir()
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in params.items()))
        (self.etc / "master.cf").write_text(_MASTER_CF.format(host=LOOPBACK, port=port))
        owner = pwd.getpwnam("postfix")
        os.chown(self.root / "data", owner.pw_uid, owner.pw_gid)
        self.maillog.touch()

    def _run(self, *args: str) -> None:
        r = subprocess.run(
            [POSTFIX, "-c", str(self.etc), *args], capture_output=True, text=True, timeout=60
        )
        if r.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)}: {r.stderr.strip()[-500:]}")

    def start(self) -> None:
        self._run("set-permissions")
        self._run("start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=2) as s:
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"postfix did not start: {self.maillog.read_text()[-2000:]}")

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
            return int((self.queue / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        pid = self.master_pid()
        try:
            self._run("stop")
        except RuntimeError:
            pass
        if pid:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)


def available() -> bool:
    return os.geteuid() == 0 and os.access(POSTFIX, os.X_OK)
