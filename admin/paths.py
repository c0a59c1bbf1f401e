"""Where the config, its secrets and the state live: path rules without the config model.

Kept apart from admin.config (pydantic) so that `proxy-admin --help` and the root
callback can resolve `--config` without importing the model stack (issue 12 item 4).
admin.config re-exports these names; import them from either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

DEFAULT_CONFIG_PATH = Path("/etc/mailtee/config.toml")
SECRETS_FILE_NAME = "secrets.toml"


class _HasStateDir(Protocol):
    state_dir: str


def resolve_config_path(path: str | os.PathLike[str] | None) -> Path:
    """`--config` if given, else $MAILTEE_CONFIG, else /etc/mailtee/config.toml."""
    if path:
        return Path(path)
    env = os.environ.get("MAILTEE_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH


def secrets_path(config_path: Path) -> Path:
    return config_path.with_name(SECRETS_FILE_NAME)


def state_dir(config: _HasStateDir, config_path: Path) -> Path:
    """The state directory; a relative path is relative to the config file's folder."""
    p = Path(config.state_dir)
    return p if p.is_absolute() else (config_path.parent / p)
