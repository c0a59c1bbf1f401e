"""Search, message, attachment/eml/raw downloads and export: the archive pages.

Every handler first applies the access rule (`views.visible`, roles) and audits what
the person saw or took; blocking work runs in worker threads.
"""

from __future__ import annotations

import urllib.parse

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from archive.query import QueryError
from archive.store import ArchiveError

from . import downloads, views
from .i18n import translator
from .pages import (
    MAX_EXPORT,
    audit,
    context_of,
    current_session,
    download,
    error_page,
    form_value,
    form_values,
    language_of,
    login_redirect,
    read_form,
    render,
    run,
    safe_next,
    zone_of,
)
from .sanitize import FRAME_CSP, frame_document
from .sessions import Session


async def index(request: Request) -> Response:
    return RedirectResponse("/search", 303)


def _page_url(request: Request, page: int) -> str:
    params = dict(request.query_params)
    params["page"] = str(page)
    return "/search?" + urllib.parse.urlencode(params)


async def search(request: Request) -> Response:
    session = await current_session(request)
    if session is None:
        return login_redirect(request)
    p = request.query_params
    q, after, before = p.get("q", "")[:2000], p.get("after", ""), p.get("before", "")
    direction = p.get("dir", "")
    try:
        page = max(1, min(int(p.get("page", "1")), 10_000))
    except ValueError:
        page = 1
    t = translator(language_of(request))
    searched = any(k in p for k in ("q", "after", "before", "dir"))
    query = views.build_query(q, after, before)
    rows: list[views.Row] = []
    total, capped, error = 0, False, ""
    if searched:
        try:
            rows, total, capped = await run(
                views.search,
                context_of(request).archive,
                query,
                views.scope_user(session.user, session.role),
                direction,
                page,
                zone_of(request),
            )
        except (QueryError, ArchiveError) as e:
            error = t("bad_query", error=str(e))
        await audit(
            request, session, "web.search", query=query, direction=direction, page=page, hits=total
        )
    zone = zone_of(request)
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


async def _message_access(request: Request) -> tuple[Session | None, int | None, Response | None]:
    session = await current_session(request)
    if session is None:
        return None, None, login_redirect(request)
    raw_id = request.path_params["mid"]
    mid = int(raw_id) if raw_id.isdigit() and len(raw_id) < 12 else None
    ctx = context_of(request)
    if mid is None or not await run(views.visible, ctx.archive, session.user, session.role, mid):
        await audit(request, session, "web.denied", path=request.url.path)
        return session, None, error_page(request, 404, "not_found", session)
    return session, mid, None


async def message(request: Request) -> Response:
    session, mid, refusal = await _message_access(request)
    if refusal is not None:
        return refusal
    assert session is not None and mid is not None
    ctx = context_of(request)
    data = await run(
        views.message_view, ctx.archive, mid, zone_of(request), session.role in ("auditor", "admin")
    )
    await audit(request, session, "web.view", message=mid, sha256=data["m"]["sha256"])
    back = safe_next(request.query_params.get("back", "/search"))
    return render(request, "message.html", session=session, back=back, **data)


async def message_html(request: Request) -> Response:
    session, mid, refusal = await _message_access(request)
    if refusal is not None:
        return refusal
    assert mid is not None
    body = await run(views.html_body, context_of(request).archive, mid)
    await audit(request, session, "web.view", message=mid, part="html")
    response = HTMLResponse(frame_document(body, language_of(request)))
    response.headers["content-security-policy"] = FRAME_CSP
    response.headers["x-frame-options"] = "SAMEORIGIN"
    return response


async def message_raw(request: Request) -> Response:
    session, mid, refusal = await _message_access(request)
    if refusal is not None:
        return refusal
    assert mid is not None
    raw = await run(views.raw_text, context_of(request).archive, mid)
    await audit(request, session, "web.view", message=mid, part="source")
    return render(request, "raw.html", session=session, id=mid, raw=raw)


async def message_eml(request: Request) -> Response:
    session, mid, refusal = await _message_access(request)
    if refusal is not None:
        return refusal
    assert mid is not None
    ctx = context_of(request)
    row = await run(
        ctx.archive.catalog.one, "SELECT sha256, size FROM messages WHERE id = ?", (mid,)
    )
    await audit(request, session, "web.download", message=mid, part="eml", sha256=row["sha256"])
    return download(
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
    ctx = context_of(request)
    raw_n = request.path_params["n"]
    ok = raw_n.isdigit() and len(raw_n) < 6
    part = await run(views.find_part, ctx.archive, mid, int(raw_n)) if ok else None
    if part is None:
        return error_page(request, 404, "not_found", session)
    name = views.attachment_name(part)
    await audit(request, session, "web.download", message=mid, part=part.index, name=name)
    # Always octet-stream: a text/html or SVG attachment must never render on our origin.
    return download(
        downloads.part_chunks(ctx.archive, mid, part), name, "application/octet-stream", None
    )


async def export(request: Request) -> Response:
    session = await current_session(request)
    form = await read_form(request)
    if session is None:
        return error_page(request, 403, "csrf")
    if form is None or not session.csrf_ok(form_value(form, "csrf")):
        return error_page(request, 403, "csrf", session)
    ctx = context_of(request)
    fmt = "mbox" if form_value(form, "format") == "mbox" else "zip"
    picked = [int(v) for v in form_values(form, "id") if v.isdigit() and len(v) < 12][:MAX_EXPORT]
    query = form_value(form, "q")[:2000]

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
        return download(
            downloads.mbox_chunks(ctx.archive, ids), "mailtee-export.mbox", "application/mbox", None
        )
    return download(
        downloads.zip_chunks(ctx.archive, ids), "mailtee-export.zip", "application/zip", None
    )
