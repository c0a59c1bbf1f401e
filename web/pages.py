"""What every page needs: the per-process context, security headers, sessions from
the cookie, rendering, the audit helper, forms, and streamed downloads.

Secrets: passwords and cookies never reach a log line, an audit row or an error page.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jinja2
import trio
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from admin.config import Config, Secrets
from archive.catalog import Catalog
from archive.logins import get_role
from archive.store import Archive

from . import downloads
from .i18n import pick_language, translator
from .sanitize import PAGE_CSP
from .sessions import Session, SessionStore
from .throttle import Throttle

log = logging.getLogger("mailtee.web")


HERE = Path(__file__).parent


SESSION_COOKIE = "__Host-mailtee_session"


LOGIN_CSRF_COOKIE = "__Host-mailtee_login"


LANG_COOKIE = "mailtee_lang"


MAX_FORM_BYTES = 256 * 1024


MAX_EXPORT = 10_000


@dataclass
class WebContext:
    config: Config
    secrets: Secrets
    state_dir: Path
    archive: Archive
    #: its own SQLite connection: an audit commit (fsync) must not hold the archive's
    #: connection lock while other requests read
    audit_catalog: Catalog
    sessions: SessionStore
    throttle: Throttle
    templates: jinja2.Environment


class SecurityHeaders:
    """Adds CSP and hardening headers to every response that did not set its own, and
    `Server-Timing: app;dur=MS` (the time spent before the response headers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                # time in the app up to the response headers (bench/web.py reads it)
                dur = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", f"app;dur={dur:.1f}".encode()))
                names = {k.lower() for k, _ in headers}
                defaults = [
                    (b"content-security-policy", PAGE_CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"strict-transport-security", b"max-age=31536000"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"cross-origin-resource-policy", b"same-origin"),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
                    (b"cache-control", b"no-store"),
                ]
                for k, v in defaults:
                    if k not in names:
                        headers.append((k, v))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, wrapped)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def set_cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="strict"
    )


def language_of(request: Request) -> str:
    return pick_language(
        request.query_params.get("lang"),
        request.cookies.get(LANG_COOKIE),
        request.headers.get("accept-language"),
    )


def context_of(request: Request) -> WebContext:
    return request.app.state.web  # type: ignore[no-any-return]


def _current(ctx: WebContext, token: str | None) -> Session | None:
    """The session of this cookie, if it is live and its user still exists with the
    role the session was opened with (a removed user or a changed role ends it)."""
    session = ctx.sessions.get(token)
    if session is None:
        return None
    row = ctx.archive.catalog.one("SELECT 1 FROM users WHERE name = ?", (session.user,))
    if row is None or get_role(ctx.archive.catalog, session.user) != session.role:
        ctx.sessions.drop(token)
        return None
    return session


async def current_session(request: Request) -> Session | None:
    return await run(_current, context_of(request), request.cookies.get(SESSION_COOKIE))  # type: ignore[no-any-return]


def render(
    request: Request, name: str, code: int = 200, session: Session | None = None, **kw: Any
) -> HTMLResponse:
    lang = language_of(request)
    other = "ja" if lang == "en" else "en"
    params = dict(request.query_params)
    params["lang"] = other
    html = (
        context_of(request)
        .templates.get_template(name)
        .render(
            t=translator(lang),
            lang=lang,
            lang_query=urllib.parse.urlencode(params),
            session=session,
            **kw,
        )
    )
    response = HTMLResponse(html, code)
    if request.query_params.get("lang") in ("en", "ja"):
        set_cookie(response, LANG_COOKIE, lang, max_age=365 * 86400)
    return response


def error_page(request: Request, code: int, key: str, session: Session | None = None) -> Response:
    t = translator(language_of(request))
    return render(request, "error.html", code, session, status_code=code, message=t(key))


async def run(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(partial(fn, *args))


async def audit(request: Request, session: Session | None, action: str, **detail: Any) -> None:
    actor = session.actor if session else "web:-"
    detail = {"client": client_address(request), **detail}
    await run(partial(context_of(request).audit_catalog.audit, action, detail, actor=actor))


async def read_form(request: Request) -> dict[str, Any] | None:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) > MAX_FORM_BYTES:
        return None
    form = await request.form(max_files=0, max_fields=MAX_EXPORT + 20)
    out: dict[str, Any] = {}
    for k, v in form.multi_items():
        if isinstance(v, str):
            out.setdefault(k, []).append(v)
    return {k: (v[0] if len(v) == 1 else v) for k, v in out.items()}


def form_value(form: dict[str, Any], key: str) -> str:
    v = form.get(key, "")
    return v[0] if isinstance(v, list) else str(v)


def form_values(form: dict[str, Any], key: str) -> list[str]:
    v = form.get(key, [])
    return v if isinstance(v, list) else [v]


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urllib.parse.urlencode({"next": target}), 303)


def safe_next(value: str) -> str:
    # only a local path: no scheme, no host, no "//evil" or "/\evil"
    if value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return "/search"


def zone_of(request: Request) -> str:
    return context_of(request).config.web.time_zone


async def _stream(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Advance a blocking chunk generator in worker threads, one chunk per hop."""
    try:
        while True:
            chunk = await trio.to_thread.run_sync(next, chunks, None)
            if chunk is None:
                return
            if chunk:
                yield chunk
    finally:
        await trio.to_thread.run_sync(chunks.close)


def download(chunks: Iterator[bytes], filename: str, media: str, size: int | None) -> Response:
    headers = {
        "content-disposition": downloads.content_disposition(filename),
        "content-security-policy": "default-src 'none'; sandbox",
    }
    if size is not None:
        headers["content-length"] = str(size)
    return StreamingResponse(_stream(chunks), media_type=media, headers=headers)


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, auto_reload=False
    )
