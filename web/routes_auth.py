"""Login and logout: CSRF-protected forms, throttling, audit of every attempt."""

from __future__ import annotations

import secrets as pysecrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .auth import Identity, authenticate
from .i18n import translator
from .pages import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    audit,
    client_address,
    context_of,
    current_session,
    error_page,
    form_value,
    language_of,
    read_form,
    render,
    run,
    safe_next,
    set_cookie,
)


async def login_page(request: Request) -> Response:
    if await current_session(request) is not None:
        return RedirectResponse("/search", 303)
    return _login_form(request, "", request.query_params.get("next", "/search"), "")


def _login_form(request: Request, error: str, next_: str, login: str, status: int = 200):  # type: ignore[no-untyped-def]
    token = pysecrets.token_urlsafe(32)
    response = render(
        request, "login.html", status, None, csrf=token, next=next_, error=error, login=login
    )
    set_cookie(response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


async def login_post(request: Request) -> Response:
    ctx = context_of(request)
    t = translator(language_of(request))
    form = await read_form(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if form is None or not cookie or not pysecrets.compare_digest(form_value(form, "csrf"), cookie):
        return error_page(request, 403, "csrf")
    login = form_value(form, "login").strip()[:256]
    password = form_value(form, "password")
    next_ = safe_next(form_value(form, "next") or "/search")
    client = client_address(request)
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
    set_cookie(response, SESSION_COOKIE, token)
    response.delete_cookie(
        LOGIN_CSRF_COOKIE, path="/", secure=True, httponly=True, samesite="strict"
    )
    return response


async def logout(request: Request) -> Response:
    session = await current_session(request)
    form = await read_form(request)
    if session is None:
        return RedirectResponse("/login", 303)
    if form is None or not session.csrf_ok(form_value(form, "csrf")):
        return error_page(request, 403, "csrf", session)
    await run(context_of(request).sessions.drop, request.cookies.get(SESSION_COOKIE))
    await audit(request, session, "web.logout")
    response = RedirectResponse("/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response
