"""Fixtures for the web side (helpers in web_helpers.py): `web_site` starts real web
servers on prepared state dirs, `slapd_tls` a directory with StartTLS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from web_helpers import WebSite, build_state, start_server, stop_server

from fixtures.slapd import slapd_tls  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def web_site(
    tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA, ca_file: Path
) -> Iterator[Callable[..., WebSite]]:
    """Factory: `site = web_site(web={...}, extra={...})` -> a running web server
    (module-scoped: a module's tests may share a site)."""
    started: list[WebSite] = []

    def make(web: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> WebSite:
        root = tmp_path_factory.mktemp("web")
        config_path, state, port, ids = build_state(root, ca, web or {}, extra or {})
        log_path = root / "web.log"
        proc = start_server(config_path, log_path, port)
        site = WebSite(root, config_path, state, port, ca_file, proc, log_path, ids)
        started.append(site)
        return site

    yield make
    for site in started:
        stop_server(site.proc)
