"""Options that several commands share, declared once.

`listener add`/`listener set` and `mailbox add`/`mailbox set` take the same dozen
options; typer reads a command's options from its signature, so without this each
signature is written twice and drifts. Here the options are the fields of one
NamedTuple (each an `Annotated[..., typer.Option(...)]` with its default); `option_set`
gives the decorated command that signature and hands it the filled tuple:

    class _Given(NamedTuple):
        name: NameArg
        protocol: ProtocolOpt = None

    @app.command("add")
    @option_set(_Given)
    def add(ctx: typer.Context, given: _Given) -> None:
        \"\"\"The help text.\"\"\"
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import typer

T = TypeVar("T", bound=tuple[Any, ...])


def option_set(
    model: type[T],
) -> Callable[[Callable[[typer.Context, T], None]], Callable[..., None]]:
    """A decorator: the command's options are `model`'s fields, in order (see above)."""
    hints = typing.get_type_hints(model, include_extras=True)
    defaults: dict[str, Any] = model._field_defaults  # type: ignore[attr-defined]
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("ctx", kind, annotation=typer.Context)]
    params += [
        inspect.Parameter(f, kind, annotation=hints[f], default=defaults.get(f, inspect._empty))
        for f in model._fields  # type: ignore[attr-defined]
    ]
    signature = inspect.Signature(params)

    def decorate(body: Callable[[typer.Context, T], None]) -> Callable[..., None]:
        def command(ctx: typer.Context, **options: Any) -> None:
            body(ctx, model(**options))

        command.__signature__ = signature  # type: ignore[attr-defined]
        command.__name__, command.__doc__ = body.__name__, body.__doc__
        return command

    return decorate
