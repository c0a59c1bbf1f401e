"""Shared pytest configuration: fixture modules for real peers live in tests/fixtures/.

Fixture modules are plain modules registered as plugins below. To add yours (e.g.
`tests/fixtures/dovecot.py`), append its dotted name to `pytest_plugins`:

    pytest_plugins = [
        ...,
        "fixtures.dovecot",
        "fixtures.slapd",
        "fixtures.pop3_clients",
    ]

Plain helper modules (no fixtures) are just imported by the tests that use them:
`from fixtures.mails import utf8_8bit`, `from fixtures.smtp_clients import swaks`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `fixtures` is importable as a top-level package whatever pytest's import mode is.
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

pytest_plugins = [
    "fixtures.proxy",
    "fixtures.smtp_upstream",
    "fixtures.smtp_sink",
    "fixtures.postfix",
]
