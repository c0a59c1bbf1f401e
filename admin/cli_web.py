"""`proxy-admin web ...`: the browser access to the archive (docs/web.md)."""

from __future__ import annotations

import typer

from admin.cli_common import context, fail, setup_logging

web_app = typer.Typer(
    help="Browser access to the archive over HTTPS (see docs/web.md).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(web_app, name="web")


@web_app.command("serve")
def serve(ctx: typer.Context) -> None:
    """Serve the web side in the foreground, for debugging.

    `proxy-admin run` starts the same in supervised child processes when the web side is
    enabled in config.toml (the web table, enabled = true). Ctrl-C stops."""
    import logging  # here, not at module level: every command imports this module

    c = context(ctx)
    config = c.load_config()
    secrets = c.load_secrets(strict_mode=True)
    import trio

    from web.server import serve as web_serve

    handler = setup_logging(config.log_level)
    try:
        trio.run(web_serve, config, secrets, c.config_path)
    except KeyboardInterrupt:
        typer.echo("proxy-admin: web: stopped", err=True)
    except OSError as e:
        fail(f"web: cannot listen on {config.web.listen}:{config.web.port}: {e.strerror}", 1)
    finally:
        logging.getLogger().removeHandler(handler)
