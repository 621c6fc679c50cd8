"""The visit pages: check-in and the call (patients and clinicians), the care team's waiting room,
the phone fallback, notes to a waiting patient, guest links and the technology check.

Every route sits behind the CSRF guard (the JSON calls of the technology check send the token in
``X-CSRF-Token``); the signaling WebSocket is in ``visits/signal.py``. What a page shows comes
through ``web/records``, so only the people of the visit (and the care team who may see the
patient) reach it; the page's role (patient, clinician, staff) comes from the session and the
Appointment, never from the URL.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from housecall.access.actor import Actor
from housecall.core.settings import Settings
from housecall.messaging import attachments
from housecall.portal.views import portal_actor
from housecall.visits import before, echo, forms, links, service, sfu_relay, signal, turn
from housecall.visits.service import STATES, Visit, VisitError
from housecall.web import csrf, records
from housecall.web.i18n import _
from housecall.web.pages import FormErrors, render
from housecall.workspace.inbox import person_name
from housecall.workspace.views import care_actor

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)
# The clinic's zone for times on these pages (the demo clinic's; a per-organization zone is issue 4's).
TZ = "America/New_York"
BOOKING = "/portal/appointments/book"
VERDICT_TEXT = {
    "video": lambda: _("Video should work."),
    "audio": lambda: _("Use audio only: your connection is too weak for video."),
    "phone": lambda: _("Your network blocks video — we will call you by phone instead."),
}
JOIN_SENT = {
    "1": lambda: _("A join link was sent to the patient by the way they chose to be told."),
    "0": lambda: _("Nobody could be sent a join link: the patient has no portal account."),
}
MODE_TITLES = {
    "video": lambda: _("Video visit"),
    "phone": lambda: _("Phone visit"),
    "chat": lambda: _("Chat visit"),
}
ERRORS = {
    "ended": lambda: _("This visit has ended."),
    "not-checked-in": lambda: _("The patient has not checked in yet."),
    "no-phone": lambda: _("Give a phone number we can call."),
    "unlicensed": lambda: _("The clinician is not licensed in the state the patient is in."),
}


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _not_found(request: Request, back: str = "/") -> Response:
    return render(request, "identity/error.html", status=404, title=_("Not found"),
                  message=_("There is no such visit for you."), back=back)  # fmt: skip


async def _visit_for(rec: records.Records, actor: Actor, appointment_id: str) -> tuple[Visit, str] | None:
    visit = await service.load_visit(rec, appointment_id)
    if visit is None:
        return None
    role = service.role_in(actor, visit)
    return (visit, role) if role else None


# -- the technology check ---------------------------------------------------------------------------


def _echo(request: Request) -> echo.EchoPeers:
    peers = getattr(request.app.state, "visit_echo", None)
    if peers is None:
        settings = _settings(request)
        peers = request.app.state.visit_echo = echo.EchoPeers(
            settings.visit_echo_peers, settings.visit_echo_seconds
        )
    return peers  # type: ignore[no-any-return]


def _check_key(actor: Actor) -> str:
    return f"check-{actor.account_id or 'x'}"


@router.get("/visits/check")
async def check_page(request: Request) -> Response:
    # Anyone signed in: camera and microphone preview, then an echo call; only the person's own
    # TURN credential (minutes long) is put in the page.
    actor = await records.page_actor(request)
    servers, _expires = turn.ice_servers(_settings(request), _check_key(actor), now=time.time())
    return render(request, "visits/check.html", ice=orjson.dumps(servers).decode(), verdicts=VERDICT_TEXT)


async def _json_body(request: Request) -> dict[str, Any] | None:
    body = await request.body()
    if len(body) > 128 * 1024:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


@router.post("/visits/check/offer")
async def check_offer(request: Request) -> Response:
    # Anyone signed in (CSRF token in X-CSRF-Token): their one echo call, answered by aiortc.
    actor = await records.page_actor(request)
    offer = await _json_body(request)
    if offer is None:
        return JSONResponse({"error": "bad-offer"}, status_code=400)
    servers, _expires = turn.ice_servers(_settings(request), _check_key(actor), now=time.time())
    try:
        answer = await asyncio.wait_for(_echo(request).answer(_check_key(actor), offer, servers), 20)
    except echo.Busy:
        return JSONResponse({"error": "busy"}, status_code=503, headers={"Retry-After": "60"})
    except (ValueError, TimeoutError):
        return JSONResponse({"error": "bad-offer"}, status_code=400)
    return JSONResponse(answer)


def _number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


@router.post("/visits/check/result")
async def check_result(request: Request) -> Response:
    # Anyone signed in (CSRF header); a patient's (or proxy's) verdict is stored in the patient's
    # record, where the care team's waiting room shows it.
    actor = await records.page_actor(request)
    data = await _json_body(request)
    if data is None:
        return JSONResponse({"error": "bad-stats"}, status_code=400)
    await _echo(request).close(_check_key(actor))
    candidate = data.get("candidate")
    frames = _number(data, "frames")
    stats = service.CheckStats(
        connected=data.get("connected") is True,
        rtt_ms=_number(data, "rtt_ms"),
        bitrate_kbps=_number(data, "bitrate_kbps"),
        loss_pct=_number(data, "loss_pct"),
        candidate=candidate if candidate in ("host", "srflx", "prflx", "relay") else None,
        frames=int(frames or 0),
    )
    stored = False
    if actor.patient_id:
        async with records.writing(request, actor) as rec:
            result, _obs = await service.store_check(rec, actor.patient_id, stats)
        stored = True
    else:
        result = service.verdict(stats)
    return JSONResponse({"verdict": result, "text": VERDICT_TEXT[result](), "stored": stored})


# -- the care team's waiting room -------------------------------------------------------------------


@router.get("/workspace/visits")
async def waiting_room_page(request: Request) -> Response:
    # Care team only: today's checked-in virtual visits of the patients the person may see.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    async with records.reading(request, actor) as rec:
        visits = await service.waiting_room(rec)
        patients = [str(v.patient_id) for v in visits]
        checks = await service.latest_checks(rec, patients)
        names = {}
        if patients:
            page = await rec.search("Patient", [("_id", ",".join(sorted(set(patients)))), ("_count", "200")])
            names = {p["id"]: person_name(p) for p in page.resources}
    rows = []
    for v in visits:
        rows.append({"visit": v, "name": names.get(str(v.patient_id), ""), "check": checks.get(str(v.patient_id)),
                     "state": STATES.get(v.location_state or "", "")})  # fmt: skip
    return render(request, "visits/waiting_room.html", rows=rows, tz=TZ, verdicts=VERDICT_TEXT,
                  notice=request.query_params.get("sent") and _("Your message was sent."))  # fmt: skip


# -- one visit --------------------------------------------------------------------------------------


@router.get("/visits/{appointment_id}")
async def visit_page(request: Request, appointment_id: str) -> Response:
    # The visit's patient (or proxy; signed in, or by a join link's visit-only session), its
    # clinicians, and care-team staff who may see the patient.
    actor = await links.person(request, appointment_id)
    async with records.reading(request, actor) as rec:
        found = await _visit_for(rec, actor, appointment_id)
        if found is None:
            return _not_found(request)
        visit, role = found
        missing = await service.unlicensed(rec, visit, visit.location_state) if visit.location_state else []
        chat = await service.chat_history(rec, visit) if role != "staff" else []
        patient = await rec.read("Patient", str(visit.patient_id))
        visit_forms = await forms.forms_for(rec, visit.appointment)  # decision 0020
    # Check-in starts from the state given at booking; the patient confirms where they are now.
    state = visit.location_state or before.planned_state(visit.appointment) or ""
    values = {"state": state, "phone": visit.callback_phone or _phone_of(patient)}
    sent = request.query_params.get("joinsent")
    return _render_visit(request, visit, role, missing=missing, chat=chat, values=values,
                         patient_name=person_name(patient),
                         changing=request.query_params.get("change") == "1",
                         notice=JOIN_SENT.get(sent or "", lambda: None)(), visit_forms=visit_forms)  # fmt: skip


def _phone_of(patient: dict[str, Any] | None) -> str:
    for t in (patient or {}).get("telecom") or []:
        if t.get("system") == "phone" and t.get("value"):
            return str(t["value"])
    return ""


def _render_visit(request: Request, visit: Visit, role: str, *, missing: list[str], chat: list[dict[str, Any]],
                  values: dict[str, str], patient_name: str, changing: bool = False,
                  errors: FormErrors | None = None, status: int = 200, notice: str | None = None,
                  visit_forms: Sequence[forms.Form] = ()) -> Response:  # fmt: skip
    checked_in = visit.location_state is not None and visit.status != "booked"
    show_checkin = (
        role == "patient" and visit.status != "finished" and (not checked_in or bool(missing) or changing)
    )
    # A visit booked as a phone visit keeps its page's waiting room and admission (no media); one
    # moved to the phone (the fallback) has no call on the page any more.
    in_call = (
        visit.status != "finished"
        and (visit.modality != "phone" or visit.booked_mode == "phone")
        and ((role == "patient" and checked_in and not missing and not changing) or role == "clinician")
    )
    return render(request, "visits/visit.html", status=status, visit=visit, role=role, missing=missing, chat=chat,
                  values=values, errors=errors or FormErrors(), states=STATES, show_checkin=show_checkin,
                  in_call=in_call, patient_name=patient_name, tz=TZ, booking=BOOKING,
                  state_name=STATES.get(visit.location_state or "", ""), notice=notice,
                  guest_labels=links.LABELS, mode_title=MODE_TITLES[visit.booked_mode](),
                  visit_forms=visit_forms)  # fmt: skip


@router.post("/visits/{appointment_id}/checkin")
async def check_in(request: Request, appointment_id: str) -> Response:
    # The visit's patient or proxy (signed in, or by a join link's visit-only session): where they
    # are now and a number to call; licensure decides.
    actor = await links.visit_only(request, appointment_id) or await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    state = str(form.get("state") or "").strip().upper()
    phone = str(form.get("phone") or "")
    errors = FormErrors()
    if state not in STATES:
        errors.add("state", _("Choose the state you are in right now."))
    clean = service.clean_phone(phone)
    if clean is None:
        errors.add("phone", _("Enter a phone number we can call, like 802-555-0100."))
    async with records.writing(request, actor) as rec:
        found = await _visit_for(rec, actor, appointment_id)
        if found is None or found[1] != "patient":
            return _not_found(request, "/portal")
        visit, role = found
        if errors:
            patient = await rec.read("Patient", str(visit.patient_id))
            return _render_visit(request, visit, role, missing=[], chat=[], values={"state": state, "phone": phone},
                                 patient_name=person_name(patient), changing=True, errors=errors, status=400)  # fmt: skip
        try:
            await service.check_in(rec, visit, state=state, phone=str(clean), by=actor.fhir_user)
        except VisitError as exc:
            return render(request, "identity/error.html", status=409, title=_("Not possible"),
                          message=ERRORS.get(exc.code, ERRORS["ended"])(), back="/portal")  # fmt: skip
    signal.checked_in(actor.org_id, visit.practitioners)
    return RedirectResponse(f"/visits/{appointment_id}", status_code=303)


@router.post("/visits/{appointment_id}/phone")
async def phone_instead(request: Request, appointment_id: str) -> Response:
    # The visit's patient (or proxy; signed in or by a join link) or clinician: the visit moves to
    # the phone; a callback Task goes to the care team's inbox.
    actor = await links.person(request, appointment_id)
    form = await request.form()
    typed = str(form.get("phone") or "").strip()
    phone = service.clean_phone(typed) if typed else None
    async with records.writing(request, actor) as rec:
        found = await _visit_for(rec, actor, appointment_id)
        if found is None or found[1] not in ("patient", "clinician"):
            return _not_found(request)
        visit, _role = found
        try:
            await service.phone_instead(rec, visit, by=actor.fhir_user, phone=phone)
        except VisitError as exc:
            return render(request, "identity/error.html", status=409, title=_("Not possible"),
                          message=ERRORS.get(exc.code, ERRORS["ended"])(), back=f"/visits/{appointment_id}")  # fmt: skip
    signal.push_phone(actor.org_id, appointment_id, actor.fhir_user or "")
    return RedirectResponse(f"/visits/{appointment_id}", status_code=303)


@router.post("/visits/{appointment_id}/notice")
async def notice(request: Request, appointment_id: str) -> Response:
    # Care team: a note to the waiting patient ("running 10 minutes late"), stored and pushed live.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    text = str(form.get("text") or "").strip()
    async with records.writing(request, actor) as rec:
        found = await _visit_for(rec, actor, appointment_id)
        if found is None:
            return _not_found(request, "/workspace/visits")
        visit, _role = found
        if not text or visit.encounter is None:
            return render(request, "identity/error.html", status=400, title=_("Not possible"),
                          message=_("Write a message to send."), back="/workspace/visits")  # fmt: skip
        comm = await service.record_notice(rec, visit, text, sender=actor.fhir_user)
        me = person_name(await rec.read(*actor.fhir_user.split("/", 1))) if actor.fhir_user else ""
    signal.push_notice(
        actor.org_id, appointment_id, me or _("The care team"), comm["payload"][0]["contentString"]
    )
    return RedirectResponse("/workspace/visits?sent=1", status_code=303)


# -- files shared in the call -----------------------------------------------------------------------


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _file_refused(request: Request, appointment_id: str, status: int, message: str) -> Response:
    """The page's script shows the reason beside the file field; without script, a page says it."""
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return render(request, "identity/error.html", status=status, title=_("Not possible"), message=message,
                  back=f"/visits/{appointment_id}")  # fmt: skip


@router.post("/visits/{appointment_id}/files")
async def share_file(request: Request, appointment_id: str) -> Response:
    # A member admitted to the call (a clinician of the visit, or the patient/proxy while the visit
    # is in progress): a photo or PDF, checked by its content, stored as a chat entry of the visit
    # and announced to everyone in the call. CSRF-checked like every form.
    actor = await links.person(request, appointment_id)
    form = await request.form()
    upload = form.get("file")
    async with records.writing(request, actor) as rec:
        found = await _visit_for(rec, actor, appointment_id)
        if found is None:
            return _not_found(request)
        visit, role = found
        if not service.may_share_files(role, visit):
            return _file_refused(request, appointment_id, 403,
                                 _("You can share files once you are in the call."))  # fmt: skip
        if not isinstance(upload, UploadFile) or not upload.filename:
            return _file_refused(request, appointment_id, 400, _("Choose a file to share."))
        try:
            file = attachments.check(await upload.read(attachments.MAX_BYTES + 1), upload.filename)
        except attachments.Refused as exc:
            return _file_refused(request, appointment_id, 400, str(exc))
        comm = await service.record_file(rec, visit, file, sender=actor.fhir_user)
        me = person_name(await rec.read(*actor.fhir_user.split("/", 1))) if actor.fhir_user else ""
    entry = _file_entry(appointment_id, comm)
    signal.push_file(actor.org_id, appointment_id, actor.fhir_user, me or role, role, entry)
    if _wants_json(request):
        return JSONResponse(entry)
    return RedirectResponse(f"/visits/{appointment_id}", status_code=303)


def _file_entry(appointment_id: str, comm: dict[str, Any]) -> dict[str, Any]:
    """What the call is told about a shared file: its name, type, size and where to download it."""
    attachment = service.file_of_message(comm) or {}
    return {"id": comm["id"], "sent": comm.get("sent"),
            "file": {"name": attachment.get("title") or "", "contentType": attachment.get("contentType"),
                     "size": attachment.get("size"), "url": f"/visits/{appointment_id}/files/{comm['id']}"}}  # fmt: skip


@router.get("/visits/{appointment_id}/files/{message_id}")
async def shared_file(request: Request, appointment_id: str, message_id: str) -> Response:
    # The visit's clinicians, and its patient/proxy once admitted: a file shared in the call, as a
    # download with the type its content proved. A waiting patient is refused; anyone else gets 404.
    actor = await links.person(request, appointment_id)
    async with records.reading(request, actor) as rec:
        found = await _visit_for(rec, actor, appointment_id)
        if found is None:
            return _not_found(request)
        visit, role = found
        if not service.may_open_files(role, visit):
            if role == "patient":
                return render(request, "identity/error.html", status=403, title=_("Not yet"),
                              message=_("You can open files of the visit once you are in the call."),
                              back=f"/visits/{appointment_id}")  # fmt: skip
            return _not_found(request)
        file = await service.shared_file(rec, visit, message_id)
    if file is None:
        return _not_found(request, f"/visits/{appointment_id}")
    data, content_type, filename = file
    return Response(data, media_type=content_type, headers={
        "Content-Disposition": attachments.content_disposition(filename), "Cache-Control": "no-store",
    })  # fmt: skip


@router.get("/visits/{appointment_id}/signal")
async def signal_over_http(request: Request, appointment_id: str) -> Response:
    # Signed in: this address is the visit's WebSocket; a plain request is told to upgrade.
    await records.page_actor(request)
    return Response(status_code=426, headers={"Upgrade": "websocket"})


async def shutdown(app: FastAPI) -> None:
    """Close the technology check's echo calls still open and the SFU connections this process
    opened (the server is stopping)."""
    peers = getattr(app.state, "visit_echo", None)
    if peers is not None:
        await peers.close_all()
    await sfu_relay.close_all()


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.include_router(links.router)
    app.include_router(signal.router)
