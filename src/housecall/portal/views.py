"""The patient portal's pages (patients, and proxies acting for a patient).

Every route is for patients and proxies (policy PORTAL) and sits behind the CSRF guard. The patient
whose record is shown always comes from the session (``Actor.patient_id``): the patient themself,
or the person a proxy switched to; nothing in the URL chooses it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from housecall.access.actor import Actor, ActorKind
from housecall.core.db import Database
from housecall.identity import service
from housecall.portal import home
from housecall.web import csrf, nav, records
from housecall.web.i18n import _
from housecall.web.pages import render
from housecall.workspace.inbox import person_name

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


async def portal_actor(request: Request) -> Actor | Response:
    """The signed-in patient or proxy with a patient chosen; otherwise the page that says what to do
    (a proxy who has not chosen whose record to open is sent to choose)."""
    actor = await records.page_actor(request)
    if actor.kind not in nav.PORTAL:
        return render(request, "identity/error.html", status=403, title=_("Not available"),
                      message=_("The patient portal is for patients and the people they trust."),
                      back=nav.home_for(actor))  # fmt: skip
    if actor.patient_id is None:
        return RedirectResponse("/portal/choose", status_code=303)
    return actor


async def proxy_choices(request: Request, actor: Actor) -> list[dict[str, Any]]:
    """For a proxy: the patients who granted them access, with names (read as the system would
    show them to the proxy: the grant is the permission)."""
    if actor.account_id is None or actor.kind is not ActorKind.PROXY:
        return []
    async with _db(request).reader() as conn:
        grants = await service.proxy_grants(conn, actor.account_id)
    out = []
    for g in grants:
        name = ""
        async with records.reading(request, replace(actor, patient_id=g.patient_id)) as rec:
            name = person_name(await rec.read("Patient", g.patient_id))
        out.append({"patient_id": g.patient_id, "name": name or g.patient_id, "relationship": g.relationship})
    return out


@router.get("/portal")
async def portal_home(request: Request) -> Response:
    # Patients and proxies: the chosen patient's home page.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    assert actor.patient_id is not None
    async with records.reading(request, actor) as rec:
        patient = await rec.read("Patient", actor.patient_id)
        items = await home.attention(rec, actor.patient_id)
    choices = await proxy_choices(request, actor)
    return render(request, "portal/home.html", patient_name=person_name(patient), items=items,
                  choices=choices, acting_for=actor.patient_id, is_proxy=bool(choices))  # fmt: skip


@router.get("/portal/choose")
async def choose_page(request: Request) -> Response:
    # Proxies: choose whose record to open (from their active grants).
    actor = await records.page_actor(request)
    if actor.kind is not ActorKind.PROXY:
        return RedirectResponse(nav.home_for(actor), status_code=303)
    choices = await proxy_choices(request, actor)
    return render(request, "portal/choose.html", choices=choices, acting_for=actor.patient_id)


def install(app: FastAPI) -> None:
    app.include_router(router)
