"""The pages of links into a visit (decision 0021): a patient's single-use join link
(``/join/<token>``), a guest's link (``/guest/<token>``) and the guest's own page
(``/visits/<id>/guest``), the care team's "send join link", and the clinician's guest invitation.

A guest has no account: the guest page knows them by the ``__Host-hc_guest`` cookie that the first
opening of the link set (``visits/guests.py``), shows them only the visit's waiting room and call,
and reads nothing of the patient's record (the visit's status is looked up as the system).
"""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from housecall.access.actor import Actor, system_actor
from housecall.core import jobs
from housecall.core.db import Database
from housecall.core.mail import Mail, send_now
from housecall.core.settings import Settings
from housecall.identity import sessions
from housecall.visits import guests, join, service
from housecall.web import csrf, i18n, records
from housecall.web.i18n import _
from housecall.web.pages import FormErrors, render
from housecall.workspace.views import care_actor

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)
GUEST_MAIL = "visit.guest_mail"
EMAIL = re.compile(r"[^@\s<>\"']{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,}")
LABELS = {
    "interpreter": lambda: _("Interpreter"),
    "family": lambda: _("Family member"),
    "clinician": lambda: _("Clinician"),
    "other": lambda: _("Guest"),
}


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _link_failed(request: Request, status: int, title: str, message: str, *, signin: bool) -> Response:
    return render(request, "visits/link_failed.html", status=status, title=title, message=message,
                  signin=signin)  # fmt: skip


async def person(request: Request, appointment_id: str) -> Actor:
    """Who is asking about this visit: the signed-in person, else the person of a visit-only
    session for this visit (a join link opened without signing in), else a redirect to sign in."""
    actor = await sessions.actor_for_request(request)
    if actor is None:
        actor = await join.visit_actor(_db(request), request, appointment_id)
    return actor or await records.page_actor(request)


async def visit_only(request: Request, appointment_id: str) -> Actor | None:
    """The visit-only session's person when nobody is signed in (None when someone is)."""
    if await sessions.actor_for_request(request) is not None:
        return None
    return await join.visit_actor(_db(request), request, appointment_id)


# -- the patient's join link ------------------------------------------------------------------------

JOIN_FAILED = {
    "unknown": (404, lambda: _("This join link is not valid. Check that you copied all of it, or sign in to join your visit.")),
    "used": (410, lambda: _("This join link was used already: each link works once. Sign in to join your visit, or ask the clinic for a new link.")),
    "expired": (410, lambda: _("This join link has expired. Sign in to join your visit, or ask the clinic for a new link.")),
    "not-yours": (404, lambda: _("This join link was sent to someone else. Sign out first if it is yours, or sign in to join your own visit.")),
}  # fmt: skip


@router.get("/join/{token}")
async def open_join_link(request: Request, token: str) -> Response:
    # Anyone holding the link: it is used up once and opens the visit it was made for (a visit-only
    # session when nobody is signed in); a used, expired or someone else's link gets a page that
    # says so, with a way to sign in.
    account = await sessions.signed_in(request)
    try:
        async with _db(request).transaction() as conn:
            joined = await join.open_link(conn, token, account.id if account else None)
    except join.JoinRefused as exc:
        status, message = JOIN_FAILED[exc.code]
        return _link_failed(request, status, _("This link does not work"), message(), signin=True)
    response = RedirectResponse(f"/visits/{joined.appointment_id}", status_code=303)
    if joined.session_secret:
        join.set_cookie(response, joined.session_secret)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.post("/visits/{appointment_id}/join-link")
async def send_join_link(request: Request, appointment_id: str) -> Response:
    # Care team who may see the visit: a fresh join link to the patient (and active proxies), by
    # the channels each chose; the message carries no health information.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    async with records.writing(request, actor) as rec:
        visit = await service.load_visit(rec, appointment_id)
        if visit is None or service.role_in(actor, visit) is None or visit.patient_id is None:
            return render(request, "identity/error.html", status=404, title=_("Not found"),
                          message=_("There is no such visit for you."), back="/workspace/visits")  # fmt: skip
        if visit.status == "finished":
            return render(request, "identity/error.html", status=409, title=_("Not possible"),
                          message=_("This visit has ended."), back=f"/visits/{appointment_id}")  # fmt: skip
        end = join.instant_us(visit.appointment.get("end"))
        told = await join.send_links(
            rec.conn, actor.org_id, appointment_id, str(visit.patient_id), end_us=end
        )
    return RedirectResponse(f"/visits/{appointment_id}?joinsent={1 if told else 0}", status_code=303)


# -- guests -----------------------------------------------------------------------------------------

GUEST_FAILED = {
    "unknown": (404, lambda: _("This guest link is not valid. Check that you copied all of it, or ask the clinician for a new link.")),
    "expired": (410, lambda: _("This guest link has expired. Ask the clinician for a new link.")),
    "taken": (410, lambda: _("This guest link was already opened on another device, and it works on one device only. Ask the clinician for a link of your own.")),
}  # fmt: skip


@router.get("/guest/{token}")
async def open_guest_link(request: Request, token: str) -> Response:
    # Anyone holding the link, no account: the first browser to open it becomes the guest (a
    # cookie); the same browser may open it again; any other is refused.
    try:
        async with _db(request).transaction() as conn:
            appointment_id, secret = await guests.open_link(conn, token, guests.browser_secret(request))
    except guests.LinkRefused as exc:
        status, message = GUEST_FAILED[exc.code]
        return _link_failed(request, status, _("This link does not work"), message(), signin=False)
    response = RedirectResponse(f"/visits/{appointment_id}/guest", status_code=303)
    if secret:
        guests.set_cookie(response, secret)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def _guest(request: Request, appointment_id: str) -> guests.Guest | None:
    secret = guests.browser_secret(request)
    async with _db(request).reader() as conn:
        return await guests.guest_of_browser(conn, secret, appointment_id)


def _not_a_guest(request: Request) -> Response:
    return _link_failed(request, 404, _("Not found"),
                        _("This page is for a visit's guest. Open the guest link you were sent on this device."),
                        signin=False)  # fmt: skip


async def _guest_page(request: Request, guest: guests.Guest, appointment_id: str, *,
                      errors: FormErrors | None = None, name: str = "", status: int = 200) -> Response:  # fmt: skip
    # The visit's status only, read as the system: the guest sees nothing of the record.
    async with records.reading(request, system_actor(guest.org_id)) as rec:
        visit = await service.load_visit(rec, appointment_id)
    if visit is None:
        return _not_a_guest(request)
    ended = visit.status == "finished" or visit.modality == "phone"
    # The label was stored in the inviting clinician's language; shown in the guest's when known.
    label = _(guest.label)
    shown = f"{guest.name} ({label})" if guest.name else label
    return render(request, "visits/guest.html", status=status, label=label, shown=shown, appointment_id=appointment_id,
                  ended=ended, errors=errors or FormErrors(), values={"name": name or (guest.name or "")},
                  in_call=bool(guest.name) and not ended and not errors)  # fmt: skip


@router.get("/visits/{appointment_id}/guest")
async def guest_page(request: Request, appointment_id: str) -> Response:
    # The visit's guest (the browser that opened the guest link): name, then the waiting room and
    # the call once a clinician lets them in.
    guest = await _guest(request, appointment_id)
    if guest is None:
        return _not_a_guest(request)
    return await _guest_page(request, guest, appointment_id)


@router.post("/visits/{appointment_id}/guest")
async def guest_name(request: Request, appointment_id: str) -> Response:
    # The visit's guest: the name the clinician will see beside the label.
    guest = await _guest(request, appointment_id)
    secret = guests.browser_secret(request)
    if guest is None or secret is None:
        return _not_a_guest(request)
    form = await request.form()
    name = " ".join(str(form.get("name") or "").split())
    errors = FormErrors()
    if not name:
        errors.add("name", _("Enter your name, so the clinician knows who is joining."))
    elif len(name) > guests.MAX_NAME:
        errors.add("name", _("Enter at most 100 characters."))
    if errors:
        return await _guest_page(request, guest, appointment_id, errors=errors, name=name, status=400)
    async with _db(request).transaction() as conn:
        await guests.set_name(conn, secret, name)
    return RedirectResponse(f"/visits/{appointment_id}/guest", status_code=303)


GUEST_MAIL_TEXT = {
    "en": ("Housecall: You are invited to a video visit",
           "You are invited to join a Housecall video visit:\n{url}\n\n"
           "The link works on one device only, for two hours. The clinician lets you in from the visit.\n"),
    "es": ("Housecall: Le invitan a una consulta por video",
           "Le invitan a unirse a una consulta por video de Housecall:\n{url}\n\n"
           "El enlace funciona en un solo dispositivo, durante dos horas. El clínico le dejará entrar desde la consulta.\n"),
}  # fmt: skip


@jobs.handler(GUEST_MAIL)
async def guest_mail(job: jobs.JobContext, args: dict[str, Any]) -> None:
    """E-mail a guest their link (no account, so not through the notification preferences): one
    fixed sentence and the link, nothing about the patient or the visit."""
    subject, body = GUEST_MAIL_TEXT.get(str(args.get("lang")), GUEST_MAIL_TEXT["en"])
    url = job.settings.public_url.rstrip("/") + str(args["link"])
    domain = job.settings.smtp_from.rsplit("@", 1)[-1].strip("> ") or "housecall.invalid"
    mail = Mail(to=str(args["to"]), subject=subject, body=body.format(url=url),
                headers=(("Message-ID", f"<guest.{args['id']}@{domain}>"), ("Auto-Submitted", "auto-generated")))  # fmt: skip
    await asyncio.to_thread(send_now, job.settings, mail)


@router.post("/visits/{appointment_id}/guests")
async def invite_guest(request: Request, appointment_id: str) -> Response:
    # The visit's clinicians: a link for a third party (interpreter, family member, another
    # clinician), e-mailed to them if an address is given; the guest still waits to be admitted.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    kind = str(form.get("label") or "other")
    email = str(form.get("email") or "").strip()
    errors = FormErrors()
    if kind not in LABELS:
        errors.add("label", _("Choose who the guest is."))
    if email and (len(email) > 254 or not EMAIL.fullmatch(email)):
        errors.add("email", _("Enter an e-mail address like name@example.com, or leave it empty."))
    async with records.writing(request, actor) as rec:
        visit = await service.load_visit(rec, appointment_id)
        if visit is None or service.role_in(actor, visit) != "clinician" or actor.account_id is None:
            return render(request, "identity/error.html", status=404, title=_("Not found"),
                          message=_("There is no such visit for you."), back="/workspace/visits")  # fmt: skip
        if errors:
            return render(request, "visits/guest_link.html", status=400, link=None, errors=errors,
                          values={"label": kind, "email": email}, labels=LABELS, appointment_id=appointment_id)  # fmt: skip
        label = str(LABELS[kind]())
        raw = await guests.make_link(rec.conn, org_id=actor.org_id, appointment_id=appointment_id, label=label,
                                     account_id=actor.account_id)  # fmt: skip
        if email:
            await jobs.enqueue(rec.conn, GUEST_MAIL, {"to": email, "link": f"/guest/{raw}", "lang": i18n.current(),
                                                      "id": secrets.token_hex(16)})  # fmt: skip
    link = f"{_settings(request).public_url.rstrip('/')}/guest/{raw}"
    return render(request, "visits/guest_link.html", link=link, label=label, emailed=bool(email),
                  appointment_id=appointment_id, labels=LABELS, values={})  # fmt: skip
