"""The organization admin's page for apps: the OAuth clients registered for the organization (backend
services, devices) and the installation-wide SMART apps its people may use, with "disable" for the
organization's own. The command line (``housecall client``) does the same for operators."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from housecall.access.actor import Role
from housecall.core.db import Database
from housecall.identity import sessions
from housecall.smart import clients
from housecall.web import csrf
from housecall.web.i18n import _
from housecall.web.pages import render

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


async def _admin_org(request: Request) -> str | None:
    state = await sessions.require_signed_in(request)
    return state.account.org_id if Role.ORG_ADMIN in state.account.roles else None


def _not_found(request: Request) -> Response:
    return render(request, "identity/error.html", status=404, title=_("Not found"),
                  message=_("There is no such page."), back="/account")  # fmt: skip


@router.get("/admin/apps")
async def admin_apps(request: Request) -> Response:
    # Organization admin (role org_admin): the organization's clients and the shared apps.
    org_id = await _admin_org(request)
    if org_id is None:
        return _not_found(request)
    async with _db(request).reader() as conn:
        every = await clients.list_clients(conn)
    own = [c for c in every if c.org_id == org_id]
    shared = [c for c in every if c.org_id is None]
    return render(request, "smart/admin_apps.html", own=own, shared=shared)


@router.post("/admin/apps/{client_id}/disable")
async def admin_disable_app(request: Request, client_id: str) -> Response:
    # Organization admin; CSRF-checked. Only the organization's own clients; their grants are revoked.
    org_id = await _admin_org(request)
    if org_id is None:
        return _not_found(request)
    async with _db(request).transaction() as conn:
        client = await clients.get_client(conn, client_id[:64])
        if client is None or client.org_id != org_id:
            return _not_found(request)
        await clients.disable_client(conn, client.client_id)
    return RedirectResponse("/admin/apps", status_code=303)


def install(app: FastAPI) -> None:
    app.include_router(router)
