"""The quick state_dir reader (admin.config_keys, used by search/show/export) and the full
config model (admin.config) agree: same state dir for the configs mailtee writes and
documents, same one-line error (exit 2) for a bad file or a bad state_dir."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
from admin_cli_helpers import Cli

from admin import config_keys
from admin.config import Config, ConfigError, config_to_dict, load_config
from admin.paths import state_dir

HEADER = Path(__file__).resolve().parents[2] / "packaging" / "debian" / "config-header.toml"


def _both(path: Path) -> tuple[Path, Path]:
    return config_keys.load_state_dir(path), state_dir(load_config(path), path)


def _errors(path: Path) -> tuple[str, str]:
    with pytest.raises(ConfigError) as quick:
        config_keys.load_state_dir(path)
    with pytest.raises(ConfigError) as full:
        load_config(path)
    return str(quick.value), str(full.value)


def test_config_error_is_one_class() -> None:
    assert config_keys.ConfigError is ConfigError
    assert Config().state_dir == config_keys.DEFAULT_STATE_DIR


@pytest.mark.parametrize("args", [(), ("--demo",)])
def test_configs_written_by_init_agree(cli: Cli, args: tuple[str, ...]) -> None:
    r = cli("init", "--state-dir", "state", "--hostname", "gw.example.org", *args)
    assert r.exit_code == 0, r.output
    quick, full = _both(cli.config_path)
    assert quick == full == cli.config_path.parent / "state"


def test_the_packaged_default_config_agrees(tmp_path: Path) -> None:
    # what packaging/build-deb.sh writes to /etc/mailtee/config.toml
    path = tmp_path / "config.toml"
    body = tomli_w.dumps(config_to_dict(Config(state_dir="/var/lib/mailtee")))
    path.write_text(HEADER.read_text() + body)
    assert _both(path) == (Path("/var/lib/mailtee"), Path("/var/lib/mailtee"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ('hostname = "gw.example.org"\n', "/var/lib/mailtee"),  # the default
        ('state_dir = "/srv/mailtee"\n', "/srv/mailtee"),
        ('state_dir = "../var"\n', "{dir}/../var"),  # relative to the config's folder
        ('state_dir = ""\n', "{dir}"),
        ('state_dir = "~/m"\n', "{dir}/~/m"),  # no ~ expansion in either
        ('state_dir = "/srv/ü m"\n[web]\nport = 8443\n', "/srv/ü m"),
    ],
)
def test_hand_written_configs_agree(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    quick, full = _both(path)
    assert quick == full == Path(expected.format(dir=tmp_path))


@pytest.mark.parametrize(
    "content",
    [
        None,  # missing
        b"",  # empty
        b"state_dir = \n",  # not TOML
        b"\xff\xfe",  # not UTF-8
        b"state_dir = 5\n",
        b'state_dir = ["/a"]\n',
        b"state_dir = 2026-12-01\n",
        b'[state_dir]\npath = "/a"\n',
        b'state_dir = "/a"\n[[listener]]\nname = "x"\ntarget_password = "s3cret"\n',
    ],
)
def test_bad_files_give_the_same_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "config.toml"
    if content is not None:
        path.write_bytes(content)
    quick, full = _errors(path)
    assert quick == full
    assert "\n" not in quick and str(path) in quick
    assert "s3cret" not in quick


def test_quick_reader_ignores_keys_it_does_not_need(tmp_path: Path) -> None:
    # search needs only the state dir: a bad listener is `check`'s business, not search's
    path = tmp_path / "config.toml"
    path.write_text('state_dir = "/srv/m"\n[[listener]]\nname = "bad name!"\n')
    assert config_keys.load_state_dir(path) == Path("/srv/m")
    with pytest.raises(ConfigError, match="listener"):
        load_config(path)


def test_search_with_a_bad_state_dir_is_one_line_exit_2(cli: Cli) -> None:
    cli.config_path.parent.mkdir(parents=True)
    cli.config_path.write_text("state_dir = 5\n")
    for args in (("search", "x"), ("show", "1"), ("export", "x", "--out", "o")):
        r = cli(*args)
        assert r.exit_code == 2, (args, r.output)
        assert r.output.strip().splitlines() == [
            f"proxy-admin: error: {cli.config_path}: state_dir: Input should be a valid string"
        ]
