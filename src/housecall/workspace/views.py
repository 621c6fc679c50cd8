"""The clinician workspace: the care team's inbox (``workspace/inbox.py``).

Every route is for the care team (clinicians, nurses, RPM nurses, interpreters: policy CLINICAL)
and sits behind the CSRF guard; what a page shows comes through ``web/records`` and so only
covers the patients the person has a care relationship with.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from housecall.access.actor import Actor, ActorKind
from housecall.web import csrf, nav, records
from housecall.web.i18n import _
from housecall.web.pages import render
from housecall.workspace import inbox

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)
ACTIONS = ("claim", "assign", "release", "complete")


def is_care_team(actor: Actor) -> bool:
    return actor.kind is ActorKind.PRACTITIONER or (
        actor.kind is ActorKind.STAFF and bool(actor.roles & nav.CARE)
    )


async def care_actor(request: Request) -> Actor | Response:
    """The signed-in care-team member, or the page saying this is not for them."""
    actor = await records.page_actor(request)
    if not is_care_team(actor):
        return render(request, "identity/error.html", status=403, title=_("Not available"),
                      message=_("The workspace is for the care team."), back=nav.home_for(actor))  # fmt: skip
    return actor


@router.get("/workspace")
async def inbox_page(request: Request, pool: str = "", kind: str = "", who: str = "") -> Response:
    # Care team only; shows the work of the patients the person may see.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    flt = inbox.Filter(
        pool=pool[:64],
        kind=kind if kind in inbox.KINDS else "",
        who=who if who in ("mine", "unassigned") else "",
    )
    async with records.reading(request, actor) as rec:
        items, total = await inbox.inbox(rec, flt, me=actor.fhir_user)
        counts = await inbox.counts(rec, me=actor.fhir_user)
        pools = await inbox.pools(rec)
        mine = await inbox.pools_of(rec, actor.fhir_user.split("/", 1)[1]) if actor.fhir_user else []
        team = await inbox.team(rec)
    pool_names = dict(pools)
    return render(request, "workspace/inbox.html", items=items, total=total, counts=counts, flt=flt,
                  pools=pools, pool_names=pool_names, my_pools=mine, team=team, kinds=inbox.KINDS, me=actor.fhir_user,
                  warning_hours=inbox.AGE_WARNING_HOURS)  # fmt: skip


@router.post("/workspace/tasks/{task_id}/{action}")
async def change_task(request: Request, task_id: str, action: str) -> Response:
    # Care team only; CSRF-checked; the change is made only on the version the page showed.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    version = form.get("version")
    back = form.get("next")
    target = back if isinstance(back, str) and back.startswith("/workspace") else "/workspace"
    if action not in ACTIONS or not isinstance(version, str) or not version.isdigit() or not actor.fhir_user:
        return render(request, "identity/error.html", status=400, title=_("Not possible"),
                      message=_("That change cannot be made."), back=target)  # fmt: skip
    to = form.get("to")
    try:
        async with records.writing(request, actor) as rec:
            if action == "assign" and (not isinstance(to, str) or to not in dict(await inbox.team(rec))):
                raise ValueError("work is assigned to a member of a pool")
            await inbox.change(
                rec, task_id, int(version), action, me=actor.fhir_user, to=to if isinstance(to, str) else None
            )
    except inbox.Conflict:
        return render(request, "identity/error.html", status=409, title=_("Someone else changed this"),
                      message=_("Another member of the team changed this item while you were looking. "
                                "The inbox now shows who has it."), back=target)  # fmt: skip
    except (LookupError, ValueError):
        return render(request, "identity/error.html", status=404, title=_("Not found"),
                      message=_("That item is not in your inbox."), back=target)  # fmt: skip
    return RedirectResponse(target, status_code=303)


def install(app: FastAPI) -> None:
    app.include_router(router)
