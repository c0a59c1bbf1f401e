"""Administration pages (admin role only): service status, users, the audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from archive.errtext import describe
from archive.pull.state import mailbox_outcomes
from archive.users import list_users

from . import views
from .pages import (
    context_of,
    current_session,
    error_page,
    login_redirect,
    render,
    run,
)
from .sessions import Session


async def _admin(request: Request) -> tuple[Session | None, Response | None]:
    session = await current_session(request)
    if session is None:
        return None, login_redirect(request)
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
    ctx = context_of(request)
    try:
        status = await run(_status, ctx.state_dir)
    except Exception as e:  # the service may be down; show why, do not fail the page
        error = describe(e, limit=200)
    # the pulls' outcomes come from their own state, whether the service runs or not
    mailboxes = await run(mailbox_outcomes, ctx.config.mailbox, ctx.state_dir)
    return render(
        request, "admin.html", session=session, tab="status", status=status,
        status_error=error, mailboxes=mailboxes,
    )  # fmt: skip


async def admin_users(request: Request) -> Response:
    session, refusal = await _admin(request)
    if refusal is not None:
        return refusal
    users = await run(list_users, context_of(request).archive.catalog)
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
    rows = await run(views.audit_rows, context_of(request).archive, actor, action)
    return render(
        request,
        "admin.html",
        session=session,
        tab="audit",
        audit=rows,
        f_actor=actor,
        f_action=action,
    )
