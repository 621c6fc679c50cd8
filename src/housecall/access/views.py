"""Pages of the access path: emergency (break-glass) access.

Every route states its policy; all sit behind the CSRF guard and require a signed-in clinician
or nurse who has proved their password again within ``REAUTH_SECONDS``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from housecall.access import breakglass
from housecall.access.actor import Actor
from housecall.audit.trail import Access, who_viewed
from housecall.core.db import Database
from housecall.core.mail import Outbox
from housecall.core.settings import Settings
from housecall.fhir.store import Store
from housecall.identity import sessions
from housecall.identity.clock import clock
from housecall.web import csrf, i18n
from housecall.web.i18n import Msg, _
from housecall.web.pages import FormErrors, render

REAUTH_SECONDS = 300
router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _signed_in(request: Request) -> Actor:
    """The signed-in person's actor; otherwise a redirect to sign-in (raised)."""
    await sessions.require_signed_in(request)
    actor = await sessions.actor_for_request(request)
    assert actor is not None  # a full session always has one
    return actor


def _not_for_you(request: Request) -> Response:
    return render(request, "identity/error.html", status=403, title=_("Not available"),
                  message=_("Only clinicians and nurses can open a record in an emergency."), back="/account")  # fmt: skip


@router.get("/break-glass")
async def break_glass_page(request: Request, patient: str = "") -> Response:
    # Clinicians and nurses, freshly re-authenticated: the form and their recent openings.
    actor = await sessions.require_fresh_auth(request, REAUTH_SECONDS)
    if not breakglass.may_break_glass(actor):
        return _not_for_you(request)
    async with _db(request).reader() as conn:
        recent = await breakglass.openings_of(conn, actor.account_id or "")
    return render(request, "access/break_glass.html", recent=recent,
                  now=clock.now_us(), values={"patient": patient[:64], "minutes": str(breakglass.DEFAULT_MINUTES)},
                  max_minutes=breakglass.MAX_MINUTES)  # fmt: skip


@router.post("/break-glass")
async def break_glass_open(request: Request) -> Response:
    # Clinicians and nurses, freshly re-authenticated; CSRF-checked. Opens the record, audits, tells.
    actor = await sessions.require_fresh_auth(request, REAUTH_SECONDS)
    if not breakglass.may_break_glass(actor):
        return _not_for_you(request)
    form = await request.form()

    def text(name: str, limit: int) -> str:
        value = form.get(name)
        return value.strip()[:limit] if isinstance(value, str) else ""

    values = {"patient": text("patient", 64), "reason": text("reason", 2000), "minutes": text("minutes", 4)}
    minutes = int(values["minutes"]) if values["minutes"].isdigit() else 0
    outbox = Outbox()
    try:
        async with _db(request).transaction() as conn:
            opening = await breakglass.open_record(
                conn, actor, values["patient"], values["reason"], minutes, clock.now_us(), outbox
            )
    except breakglass.BreakGlassError as exc:
        errors = FormErrors()
        errors.add(exc.field, _(exc.args[0]))
        context: dict[str, Any] = {"recent": [], "now": clock.now_us(),
                                   "max_minutes": breakglass.MAX_MINUTES}  # fmt: skip
        return render(request, "access/break_glass.html", status=400, errors=errors, values=values, **context)
    await outbox.send(_settings(request))
    return RedirectResponse(f"/break-glass/{opening.id}", status_code=303)


@router.get("/break-glass/{opening_id}")
async def break_glass_status(request: Request, opening_id: str) -> Response:
    # The clinician who opened it: when it ends, and a button to end it now.
    state = await sessions.require_signed_in(request)
    async with _db(request).reader() as conn:
        opening = await breakglass.get_opening(conn, opening_id[:64])
    if opening is None or opening.account_id != state.account.id:
        return render(request, "identity/error.html", status=404, title=_("Not found"),
                      message=_("There is no such emergency access."), back="/break-glass")  # fmt: skip
    return render(request, "access/break_glass_status.html", opening=opening, now=clock.now_us())


@router.post("/break-glass/{opening_id}/end")
async def break_glass_end(request: Request, opening_id: str) -> Response:
    # The clinician who opened it; CSRF-checked. Ends it now and records the end.
    actor = await _signed_in(request)
    async with _db(request).transaction() as conn:
        closed = await breakglass.close_record(conn, actor, opening_id[:64], clock.now_us())
    if closed is None:  # not theirs, unknown, or ended already: nothing to end
        return render(request, "identity/error.html", status=404, title=_("Not found"),
                      message=_("There is no open emergency access to end."), back="/break-glass")  # fmt: skip
    return RedirectResponse(f"/break-glass/{opening_id}", status_code=303)


ACTIONS = {
    "C": Msg("added to"),
    "R": Msg("opened"),
    "U": Msg("changed"),
    "D": Msg("deleted from"),
    "E": Msg("searched"),
}


@router.get("/account/record-access")
async def record_access(request: Request) -> Response:
    # Signed-in patients (and proxies, for the patient they act for): who else looked at the record.
    actor = await _signed_in(request)
    if actor.patient_id is None:
        return render(request, "identity/error.html", status=404, title=_("Not found"),
                      message=_("This page shows a patient's record."), back="/account")  # fmt: skip
    async with _db(request).reader() as conn:
        seen = await who_viewed(conn, actor.org_id, actor.patient_id, limit=200,
                                exclude_agent=f"Patient/{actor.patient_id}")  # fmt: skip
        names, elsewhere = await _agent_names(conn, actor.org_id, seen)
    rows = [
        {
            "when": i18n.datetime_text(a.recorded, "UTC") + " UTC",
            "who": (names.get((a.site or actor.org_id, a.agent or "")) or _describe(a.agent, a.agent_display))
            + (f" ({elsewhere[a.site]})" if a.site in elsewhere else ""),
            "what": _(ACTIONS.get(a.action, a.action)),
            "allowed": a.outcome == "0",
        }
        for a in seen
    ]
    return render(request, "access/record_access.html", rows=rows)


def _describe(agent: str | None, display: list[str]) -> str:
    if any(d.startswith("app:") for d in display):
        return _("A connected app or service")
    if agent and agent.startswith("RelatedPerson/"):
        return _("Someone you gave access to")
    return _("Housecall staff") if agent and agent.startswith("account/") else "Housecall"


async def _agent_names(
    conn: Any, org_id: str, seen: list[Access]
) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """The names of the Practitioner agents of ``seen`` ((organization, agent) -> name), and of the
    other organizations they acted from (id -> name).

    A clinician of another organization (one the patient's Consent let in: the event's site) is
    named from that organization's directory, with the organization's name: the patient is told
    who looked, and nothing else of that organization is read."""
    wanted: dict[str, set[str]] = {}
    elsewhere: dict[str, str] = {}
    for a in seen:
        site = a.site or org_id
        if site != org_id and site not in elsewhere:
            elsewhere[site] = await conn.fetchval("SELECT name FROM organization WHERE id = $1", site) or site
        if a.agent and a.agent.startswith("Practitioner/"):
            wanted.setdefault(site, set()).add(a.agent.split("/", 1)[1])
    names: dict[tuple[str, str], str] = {}
    for site, ids in wanted.items():
        for stored in await Store(conn, site).fetch_many("Practitioner", sorted(ids)):
            name = (stored.resource().get("name") or [{}])[0]
            text = " ".join([*name.get("prefix", []), *name.get("given", []), name.get("family", "")]).strip()
            names[(site, f"Practitioner/{stored.res_id}")] = text or _("A clinician")
    return names, elsewhere


def install(app: FastAPI) -> None:
    app.include_router(router)
