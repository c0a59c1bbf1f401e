"""The web application (Starlette): routes, sessions, CSRF, audit, security headers.

Theory of operation. Every page is rendered on the server (Jinja2, autoescaping); the
only script is /static/app.js, which shows dates in the browser's time zone and is not
needed for anything else. A request is handled in three steps: the session cookie is
looked up (`_session`), the access rule is applied (`views.visible`, roles), and the
blocking archive work runs in a worker thread (`trio.to_thread`). Every login attempt,
search, message view, download and export writes an audit row with the person
("web:NAME") and the client address. Responses carry a strict CSP and the usual
hardening headers (`_SecurityHeaders`); the mail's own HTML is only ever served from
`/message/N/html` with the frame CSP into a sandboxed iframe.

Secrets: passwords and cookies never reach a log line, an audit row or an error page.
"""

from __future__ import annotations

import logging
import secrets as pysecrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jinja2
import trio
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from admin.config import Config, Secrets
from archive.catalog import Catalog
from archive.logins import get_role
from archive.query import QueryError
from archive.store import Archive, ArchiveError
from archive.users import list_users

from . import downloads, views
from .auth import Identity, authenticate
from .i18n import pick_language, translator
from .sanitize import FRAME_CSP, PAGE_CSP, frame_document
from .sessions import Db, Session, SessionStore, store_path
from .throttle import Throttle

log = logging.getLogger("mailtee.web")

HERE = Path(__file__).parent
SESSION_COOKIE = "__Host-mailtee_session"
LOGIN_CSRF_COOKIE = "__Host-mailtee_login"
LANG_COOKIE = "mailtee_lang"
#: Forms are small; anything bigger is refused before it is parsed.
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


class _SecurityHeaders:
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


# --- helpers ---------------------------------------------------------------------------


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="strict"
    )


def _lang(request: Request) -> str:
    return pick_language(
        request.query_params.get("lang"),
        request.cookies.get(LANG_COOKIE),
        request.headers.get("accept-language"),
    )


def _ctx(request: Request) -> WebContext:
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


async def _session(request: Request) -> Session | None:
    return await run(_current, _ctx(request), request.cookies.get(SESSION_COOKIE))  # type: ignore[no-any-return]


def render(
    request: Request, name: str, code: int = 200, session: Session | None = None, **kw: Any
) -> HTMLResponse:
    lang = _lang(request)
    other = "ja" if lang == "en" else "en"
    params = dict(request.query_params)
    params["lang"] = other
    html = (
        _ctx(request)
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
        _cookie(response, LANG_COOKIE, lang, max_age=365 * 86400)
    return response


def error_page(request: Request, code: int, key: str, session: Session | None = None) -> Response:
    t = translator(_lang(request))
    return render(request, "error.html", code, session, status_code=code, message=t(key))


async def run(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(partial(fn, *args))


async def audit(request: Request, session: Session | None, action: str, **detail: Any) -> None:
    actor = session.actor if session else "web:-"
    detail = {"client": _client(request), **detail}
    await run(partial(_ctx(request).audit_catalog.audit, action, detail, actor=actor))


async def _form(request: Request) -> dict[str, Any] | None:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) > MAX_FORM_BYTES:
        return None
    form = await request.form(max_files=0, max_fields=MAX_EXPORT + 20)
    out: dict[str, Any] = {}
    for k, v in form.multi_items():
        if isinstance(v, str):
            out.setdefault(k, []).append(v)
    return {k: (v[0] if len(v) == 1 else v) for k, v in out.items()}


def _first(form: dict[str, Any], key: str) -> str:
    v = form.get(key, "")
    return v[0] if isinstance(v, list) else str(v)


def _all(form: dict[str, Any], key: str) -> list[str]:
    v = form.get(key, [])
    return v if isinstance(v, list) else [v]


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urllib.parse.urlencode({"next": target}), 303)


def _safe_next(value: str) -> str:
    # only a local path: no scheme, no host, no "//evil" or "/\evil"
    if value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return "/search"


def _zone(request: Request) -> str:
    return _ctx(request).config.web.time_zone


# --- login / logout --------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    if await _session(request) is not None:
        return RedirectResponse("/search", 303)
    return _login_form(request, "", request.query_params.get("next", "/search"), "")


def _login_form(request: Request, error: str, next_: str, login: str, status: int = 200):  # type: ignore[no-untyped-def]
    token = pysecrets.token_urlsafe(32)
    response = render(
        request, "login.html", status, None, csrf=token, next=next_, error=error, login=login
    )
    _cookie(response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


async def login_post(request: Request) -> Response:
    ctx = _ctx(request)
    t = translator(_lang(request))
    form = await _form(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if form is None or not cookie or not pysecrets.compare_digest(_first(form, "csrf"), cookie):
        return error_page(request, 403, "csrf")
    login = _first(form, "login").strip()[:256]
    password = _first(form, "password")
    next_ = _safe_next(_first(form, "next") or "/search")
    client = _client(request)
    keys = [f"account:{login.lower()}", f"client:{client}"]
    wait = await run(ctx.throttle.retry_after, keys)
    if wait > 0:
        await audit(request, None, "web.login-throttled", login=login)
        minutes = max(1, int(wait // 60) + (1 if wait % 60 else 0))
        return _login_form(request, t("throttled", minutes=minutes), next_, login, 429)
    ldap_pw = ctx.secrets.ldap.get("bind_password")
    ldap_cfg = ctx.config.ldap if ctx.config.web.ldap_login else None
    who: Identity | None = await run(
        authenticate, ctx.archive.catalog, login, password, ldap_cfg, ldap_pw
    )
    if who is None:
        await run(ctx.throttle.failed, keys)
        await audit(request, None, "web.login-failed", login=login)
        return _login_form(request, t("login_failed"), next_, login, 401)
    await run(ctx.throttle.succeeded, keys[0])
    token, session = await run(ctx.sessions.create, who.user, who.role, client)
    await audit(request, session, "web.login", via=who.via, role=who.role)
    response = RedirectResponse(next_, 303)
    _cookie(response, SESSION_COOKIE, token)
    response.delete_cookie(
        LOGIN_CSRF_COOKIE, path="/", secure=True, httponly=True, samesite="strict"
    )
    return response


async def logout(request: Request) -> Response:
    session = await _session(request)
    form = await _form(request)
    if session is None:
        return RedirectResponse("/login", 303)
    if form is None or not session.csrf_ok(_first(form, "csrf")):
        return error_page(request, 403, "csrf", session)
    await run(_ctx(request).sessions.drop, request.cookies.get(SESSION_COOKIE))
    await audit(request, session, "web.logout")
    response = RedirectResponse("/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


# --- search ----------------------------------------------------------------------------


async def index(request: Request) -> Response:
    return RedirectResponse("/search", 303)


def _page_url(request: Request, page: int) -> str:
    params = dict(request.query_params)
    params["page"] = str(page)
    return "/search?" + urllib.parse.urlencode(params)


async def search(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _login_redirect(request)
    p = request.query_params
    q, after, before = p.get("q", "")[:2000], p.get("after", ""), p.get("before", "")
    direction = p.get("dir", "")
    try:
        page = max(1, min(int(p.get("page", "1")), 10_000))
    except ValueError:
        page = 1
    t = translator(_lang(request))
    searched = any(k in p for k in ("q", "after", "before", "dir"))
    query = views.build_query(q, after, before)
    rows: list[views.Row] = []
    total, capped, error = 0, False, ""
    if searched:
        try:
            rows, total, capped = await run(
                views.search,
                _ctx(request).archive,
                query,
                views.scope_user(session.user, session.role),
                direction,
                page,
                _zone(request),
            )
        except (QueryError, ArchiveError) as e:
            error = t("bad_query", error=str(e))
        await audit(
            request, session, "web.search", query=query, direction=direction, page=page, hits=total
        )
    zone = _zone(request)
    note = t("times_in", zone=zone or "UTC")
    zone_note = (
        Markup("<span>{}</span>").format(note)
        if zone
        else Markup('<span data-zone-note="{}">{}</span>').format(
            t("times_in", zone="{zone}"), note
        )
    )
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return render(
        request,
        "search.html",
        session=session,
        q=q,
        after=after,
        before=before,
        dir=direction,
        searched=searched,
        hits=rows,
        total=f"{total}+" if capped else total,
        error=error,
        page=page,
        full_query=query,
        back_q=urllib.parse.quote(back, safe=""),  # once, not per row
        zone_note=zone_note,
        prev_url=_page_url(request, page - 1) if page > 1 else "",
        next_url=_page_url(request, page + 1)
        if isinstance(total, int) and page * views.PAGE_SIZE < total
        else "",
    )


# --- one message -----------------------------------------------------------------------


async def _message_access(request: Request) -> tuple[Session | None, int | None, Response | None]:
    session = await _session(request)
    if session is None:
        return None, None, _login_redirect(request)
    raw_id = request.path_params["mid"]
    mid = int(raw_id) if raw_id.isdigit() and len(raw_id) < 12 else None
    ctx = _ctx(request)
    if mid is None or not await run(views.visible, ctx.archive, session.user, session.role, mid):
        await audit(request, session, "web.denied", path=request.url.path)
        return session, None, error_page(request, 404, "not_found", session)
    return session, mid, None


async def message(request: Request) -> Response:
    session, mid, refusal = await _message_access(request)
    if refusal is not None:
        return refusal
    assert session is not None and mid is not None
    ctx = _ctx(request)
    data = await run(
        views.message_view, ctx.archive, mid, _zone(request), session.role in ("auditor", "admin")
    )
    await audit(request, session, "web.view", message=mid, sha256=data["m"]["sha256"])
    back = _safe_next(request.query_params.get("back", "/search"))
    return render(request, "message.html", session=session, back=back, **data)


async def message_html(request: Request) -> Response:
    session, mid, refusal = await _message_access(request)
    if refusal is not None:
        return refusal
    assert mid is not None
    body = await run(views.html_body, _ctx(request).archive, mid)
    await audit(request, session, "web.view", message=mid, part="html")
    response = HTMLResponse(frame_document(body, _lang(request)))
    response.headers["content-security-policy"] = FRAME_CSP
    response.headers["x-frame-options"] = "SAMEORIGIN"
    return response


async def message_raw(request: Request) -> Response:
    session, mid, refusal = await _message_access(request)
    if refusal is not None:
        return refusal
    assert mid is not None
    raw = await run(views.raw_text, _ctx(request).archive, mid)
    await audit(request, session, "web.view", message=mid, part="source")
    return render(request, "raw.html", session=session, id=mid, raw=raw)


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


def _download(chunks: Iterator[bytes], filename: str, media: str, size: int | None) -> Response:
    headers = {
        "content-disposition": downloads.content_disposition(filename),
        "content-security-policy": "default-src 'none'; sandbox",
    }
    if size is not None:
        headers["content-length"] = str(size)
    return StreamingResponse(_stream(chunks), media_type=media, headers=headers)


async def message_eml(request: Request) -> Response:
    session, mid, refusal = await _message_access(request)
    if refusal is not None:
        return refusal
    assert mid is not None
    ctx = _ctx(request)
    row = await run(
        ctx.archive.catalog.one, "SELECT sha256, size FROM messages WHERE id = ?", (mid,)
    )
    await audit(request, session, "web.download", message=mid, part="eml", sha256=row["sha256"])
    return _download(
        downloads.eml_chunks(ctx.archive, mid),
        f"{mid}-{row['sha256'][:12]}.eml",
        "message/rfc822",
        row["size"],
    )


async def message_part(request: Request) -> Response:
    session, mid, refusal = await _message_access(request)
    if refusal is not None:
        return refusal
    assert mid is not None
    ctx = _ctx(request)
    raw_n = request.path_params["n"]
    ok = raw_n.isdigit() and len(raw_n) < 6
    part = await run(views.find_part, ctx.archive, mid, int(raw_n)) if ok else None
    if part is None:
        return error_page(request, 404, "not_found", session)
    name = views.attachment_name(part)
    await audit(request, session, "web.download", message=mid, part=part.index, name=name)
    # Always octet-stream: a text/html or SVG attachment must never render on our origin.
    return _download(
        downloads.part_chunks(ctx.archive, mid, part), name, "application/octet-stream", None
    )


# --- export ----------------------------------------------------------------------------


async def export(request: Request) -> Response:
    session = await _session(request)
    form = await _form(request)
    if session is None:
        return error_page(request, 403, "csrf")
    if form is None or not session.csrf_ok(_first(form, "csrf")):
        return error_page(request, 403, "csrf", session)
    ctx = _ctx(request)
    fmt = "mbox" if _first(form, "format") == "mbox" else "zip"
    picked = [int(v) for v in _all(form, "id") if v.isdigit() and len(v) < 12][:MAX_EXPORT]
    query = _first(form, "q")[:2000]

    def select() -> list[int]:
        if picked:
            return [m for m in picked if views.visible(ctx.archive, session.user, session.role, m)]
        user = views.scope_user(session.user, session.role)
        out = []
        for hit in ctx.archive.iter_matches(query, user=user):
            out.append(hit.id)
            if len(out) >= MAX_EXPORT:
                break
        return out

    try:
        ids = await run(select)
    except (QueryError, ArchiveError):
        return error_page(request, 400, "bad_query", session)
    await audit(
        request,
        session,
        "web.export",
        format=fmt,
        query="" if picked else query,
        count=len(ids),
        messages=ids[:1000],
    )
    if fmt == "mbox":
        return _download(
            downloads.mbox_chunks(ctx.archive, ids), "mailtee-export.mbox", "application/mbox", None
        )
    return _download(
        downloads.zip_chunks(ctx.archive, ids), "mailtee-export.zip", "application/zip", None
    )


# --- admin -----------------------------------------------------------------------------


async def _admin(request: Request) -> tuple[Session | None, Response | None]:
    session = await _session(request)
    if session is None:
        return None, _login_redirect(request)
    if session.role != "admin":
        return session, error_page(request, 403, "forbidden", session)
    return session, None


def _status(state_dir: Path) -> dict[str, Any]:
    from proxy import control

    reply = control.request(control.socket_path(state_dir), "status")
    if not reply.get("ok"):
        raise OSError(reply.get("error", "no status"))
    s = reply["status"]
    free = s.get("disk_free_bytes")
    return {
        "reports_pending": s.get("reports_pending"),
        "disk_free": views.human_size(free) if isinstance(free, int) else "?",
        "sessions": s.get("active_sessions", 0),
        "listeners": [
            {
                "name": lst.get("name"),
                "protocol": lst.get("protocol"),
                "listen": f"{lst.get('listen')}:{lst.get('port')}",
                "target": f"{lst.get('target_host')}:{lst.get('target_port')}",
                "sessions": lst.get("active_sessions", 0),
            }
            for lst in s.get("listeners", [])
        ],
        "last_errors": [str(e) for e in s.get("last_errors", [])][-20:],
    }


async def admin_status(request: Request) -> Response:
    session, refusal = await _admin(request)
    if refusal is not None:
        return refusal
    status, error = None, ""
    try:
        status = await run(_status, _ctx(request).state_dir)
    except Exception as e:  # the service may be down; show why, do not fail the page
        error = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    return render(
        request, "admin.html", session=session, tab="status", status=status, status_error=error
    )


async def admin_users(request: Request) -> Response:
    session, refusal = await _admin(request)
    if refusal is not None:
        return refusal
    users = await run(list_users, _ctx(request).archive.catalog)
    for u in users:
        u.setdefault("role", "user")
        u["role"] = u.get("role") or "user"
        u["messages"] = u.get("messages", u.get("message_count", ""))
    return render(request, "admin.html", session=session, tab="users", users=users)


async def admin_audit(request: Request) -> Response:
    session, refusal = await _admin(request)
    if refusal is not None:
        return refusal
    actor = request.query_params.get("actor", "")[:200]
    action = request.query_params.get("action", "")[:200]
    rows = await run(views.audit_rows, _ctx(request).archive, actor, action)
    return render(
        request,
        "admin.html",
        session=session,
        tab="audit",
        audit=rows,
        f_actor=actor,
        f_action=action,
    )


# --- the app ---------------------------------------------------------------------------


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_page(request, 404, "not_found", await _session(request))


async def _archive_error(request: Request, exc: Exception) -> Response:
    log.error("web: %s %s: %s", request.method, request.url.path, exc)
    return error_page(request, 500, "archive_error", await _session(request))


async def _method(request: Request, exc: Exception) -> Response:
    return Response("method not allowed\n", 405, media_type="text/plain")


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, auto_reload=False
    )


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
    app.add_middleware(_SecurityHeaders)
    return app
