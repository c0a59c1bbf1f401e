"""What a reload changed, in words an operator can act on (issue 10 item 16).

`ProxyService.reload` decides *how* to apply a new configuration (keep, rebind, stop);
this module only names *what* differs, so the reload log line and `proxy-admin reload`
can say `changed=smtp(target_password),pop3(certificate)` instead of `changed=-` when
only a secret or the certificate changed. Secrets are named, never shown: the result
holds field names only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

#: Config fields every listener's sessions depend on (serve._global_key).
SESSION_GLOBALS = ("hostname", "on_archive_failure", "allow_clients", "limits")


def tls_fingerprint(cert: Path, key: Path) -> str | None:
    """SHA-256 over cert.pem + key.pem, or None when they cannot be read."""
    h = hashlib.sha256()
    try:
        for p in (cert, key):
            h.update(p.read_bytes())
    except OSError:
        return None
    return h.hexdigest()


def listener_changes(
    old_config: Any,
    new_config: Any,
    old_listener: Any,
    new_listener: Any,
    old_password: str | None,
    new_password: str | None,
    certificate_changed: bool,
) -> list[str]:
    """The names of what changed for one listener present before and after."""
    changed = [
        f
        for f in type(new_listener).model_fields
        if getattr(old_listener, f) != getattr(new_listener, f)
    ]
    if old_password != new_password:
        changed.append("target_password")
    if certificate_changed and new_listener.client_tls != "none":
        changed.append("certificate")
    changed += [f for f in SESSION_GLOBALS if getattr(old_config, f) != getattr(new_config, f)]
    return changed


def global_changes(old_config: Any, new_config: Any) -> list[str]:
    """Top-level settings (besides the listeners) that differ: alerts, log_level, ..."""
    return [
        f
        for f in type(new_config).model_fields
        if f != "listener" and getattr(old_config, f) != getattr(new_config, f)
    ]


def summary(names: list[str], details: dict[str, list[str]]) -> str:
    """`smtp(target_port,certificate),pop3` -- or `-` for none."""
    parts = [f"{n}({','.join(details[n])})" if details.get(n) else n for n in names]
    return ",".join(parts) or "-"
