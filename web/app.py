"""The web application (Starlette): the route table and error pages.

The pages live in routes_auth.py (login/logout), routes_archive.py (search, message,
downloads, export) and routes_admin.py; what they share in pages.py.

Theory of operation. Every page is rendered on the server (Jinja2, autoescaping); the
only script is /static/app.js, which shows dates in the browser's time zone and is not
needed for anything else. A request is handled in three steps: the session cookie is
looked up (`current_session`), the access rule is applied (`views.visible`, roles), and the
blocking archive work runs in a worker thread (`trio.to_thread`). Every login attempt,
search, message view, download and export writes an audit row with the person
("web:NAME") and the client address. Responses carry a strict CSP and the usual
hardening headers (`SecurityHeaders`); the mail's own HTML is only ever served from
`/message/N/html` with the frame CSP into a sandboxed iframe.

Secrets: passwords and cookies never reach a log line, an audit row or an error page.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from admin.config import Config, Secrets
from archive.catalog import Catalog
from archive.store import Archive

from .pages import (
    HERE,
    SecurityHeaders,
    WebContext,
    current_session,
    error_page,
    log,
    templates,
)
from .routes_admin import admin_audit, admin_status, admin_users
from .routes_archive import (
    export,
    index,
    message,
    message_eml,
    message_html,
    message_part,
    message_raw,
    search,
)
from .routes_auth import login_page, login_post, logout
from .sessions import Db, SessionStore, store_path
from .throttle import Throttle


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_page(request, 404, "not_found", await current_session(request))


async def _archive_error(request: Request, exc: Exception) -> Response:
    log.error("web: %s %s: %s", request.method, request.url.path, exc)
    return error_page(request, 500, "archive_error", await current_session(request))


async def _method(request: Request, exc: Exception) -> Response:
    return Response("method not allowed\n", 405, media_type="text/plain")


def create_app(
    config: Config,
    secrets: Secrets,
    state_dir: Path,
    *,
    archive: Archive | None = None,
    clock: Callable[[], float] | None = None,
) -> Starlette:
    """The ASGI app for one state dir (the caller closes `app.state.web.archive`)."""
    kw = {"clock": clock} if clock is not None else {}
    archive = archive or Archive(state_dir)
    db = Db(store_path(state_dir))
    ctx = WebContext(
        config=config,
        secrets=secrets,
        state_dir=state_dir,
        archive=archive,
        audit_catalog=Catalog(archive.catalog.path),
        sessions=SessionStore(db, config.web.session_lifetime, config.web.session_idle, **kw),
        throttle=Throttle(db, config.web.max_failures, config.web.throttle_window, **kw),
        templates=templates(),
    )
    routes = [
        Route("/", index),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/search", search),
        Route("/message/{mid}", message),
        Route("/message/{mid}/html", message_html),
        Route("/message/{mid}/raw", message_raw),
        Route("/message/{mid}/eml", message_eml),
        Route("/message/{mid}/part/{n}", message_part),
        Route("/export", export, methods=["POST"]),
        Route("/admin/status", admin_status),
        Route("/admin/users", admin_users),
        Route("/admin/audit", admin_audit),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _method})
    app.state.web = ctx
    app.add_middleware(SecurityHeaders)
    return app
