"""Each package has one exception root, and every exception class it defines derives
from it (issue 11 item 6): a caller catches a package with one class, and the CLI's
error edge (admin/cli_common.py) turns each root into one line.

The modules are imported (not parsed) so that inheritance is seen as Python sees it,
through aliases and re-exports; a package's `__main__` (an entry point that runs on
import) is left out, as tests/test_import_graph.py leaves entry points out of its rules.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

ROOTS = {
    "proxy": ("proxy.errors", "ProxyError"),
    "archive": ("archive.errors", "ArchiveError"),
    "accounts": ("accounts.errors", "AccountError"),
    "web": ("web.errors", "WebError"),
    "admin": ("admin.errors", "AdminError"),
}


def _exception_classes(package: str) -> list[type[BaseException]]:
    pkg = importlib.import_module(package)
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(pkg.__path__, package + "."):
        if info.name.rpartition(".")[2] == "__main__":
            continue
        module = importlib.import_module(info.name)
        for _name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name  # defined here, not imported
            ):
                found.append(obj)
    return found


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_every_exception_derives_from_the_package_root(package: str) -> None:
    module, name = ROOTS[package]
    root = getattr(importlib.import_module(module), name)
    classes = _exception_classes(package)
    assert root in classes  # the walk reaches the root's own module
    strays = sorted(f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, root))
    assert strays == []


def test_the_cli_edge_catches_every_root() -> None:
    """Each root is an expected error at the CLI edge: one stderr line, not a traceback."""
    from admin import cli_common

    for module, name in ROOTS.values():
        root = getattr(importlib.import_module(module), name)
        assert cli_common._expected_code(root("x")) == 1, name


def test_callers_that_catch_value_error_still_do() -> None:
    """Bad-input errors keep ValueError as a base where callers catch that."""
    from archive.importer import ImportSourceError
    from archive.query import QueryError
    from archive.users import UserError

    for cls in (QueryError, UserError, ImportSourceError):
        assert issubclass(cls, ValueError)
