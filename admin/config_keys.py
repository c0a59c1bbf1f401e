"""config.toml without the model: the file checks every loader shares, and `state_dir`.

Why: `proxy-admin search` (and `show`, `export`) read one key of the config, the state
dir, but validating the whole file with the pydantic model (admin.config) costs ~65 ms
of imports, more than half of the search's start-up budget (issue 12 item 4). This module
imports only the standard library. admin.config builds on it -- `read_toml` is the first
step of `load_config`, `DEFAULT_STATE_DIR` the model's default and `ConfigError` the
model's error type -- so the two readers cannot drift: the same file gives the same state
dir and the same one-line error (exit 2). tests/admin/test_config_keys.py checks both
readers on the example configs.

What the quick read does not do: validate the other keys. A command that needs more than
the state dir (run, check, reload, listener ..., ingest, ...) loads the full model, which
refuses a bad file as a whole.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from admin.errors import AdminError
from admin.paths import SECRETS_FILE_NAME
from admin.paths import state_dir as _resolve_state_dir

#: config.toml `state_dir` when it is not set (the .deb's; `init` writes its own)
DEFAULT_STATE_DIR = "/var/lib/mailtee"


class ConfigError(AdminError):
    """A configuration problem, described in one line that names the key at fault."""


def read_toml(path: Path) -> dict[str, Any]:
    """config.toml as a dict, or a ConfigError naming the file: missing, unreadable, not
    TOML, empty, or holding a password (those belong in secrets.toml)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file (create one with `proxy-admin init`)"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    if not data:
        raise ConfigError(
            f"{path}: the file is empty (create one with `proxy-admin init`, "
            "or see docs/configuration.md)"
        )
    if "target_password" in raw.decode("utf-8", "replace"):
        raise ConfigError(f"{path}: passwords belong in {SECRETS_FILE_NAME}, not config.toml")
    return data


class _StateDir:
    """What admin.paths.state_dir needs of a config: its `state_dir` string."""

    __slots__ = ("state_dir",)

    def __init__(self, value: str) -> None:
        self.state_dir = value


def state_dir_setting(data: dict[str, Any], source: str) -> str:
    """`state_dir` of a parsed config.toml, checked as the model checks it (a string)."""
    value = data.get("state_dir", DEFAULT_STATE_DIR)
    if not isinstance(value, str):
        # the model's (pydantic's) wording, so that both readers say the same
        raise ConfigError(f"{source}: state_dir: Input should be a valid string")
    return value


def load_state_dir(config_path: Path) -> Path:
    """The state directory named by config.toml (relative to the file's folder), reading
    only that key; the file checks are those of admin.config.load_config."""
    data = read_toml(config_path)
    return _resolve_state_dir(_StateDir(state_dir_setting(data, str(config_path))), config_path)
