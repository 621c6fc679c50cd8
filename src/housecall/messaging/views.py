"""Secure messaging pages: the patient's conversations (``/portal/messages``) and the care team's
view of one conversation (``/workspace/messages/{thread}``), with attachments served as downloads.

Portal routes are for patients and proxies (policy PORTAL), about the patient chosen in the
session; workspace routes are for the care team (CLINICAL). Every route sits behind the CSRF
guard and reaches the store through ``web/records`` as the signed-in person, so a conversation or
an attachment of a patient the person may not see answers 404, exactly like an unknown one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData, UploadFile

from housecall.access.actor import Actor
from housecall.messaging import attachments, model
from housecall.portal import home
from housecall.portal.views import portal_actor
from housecall.web import csrf, records
from housecall.web.i18n import _, ngettext
from housecall.web.pages import FormErrors, render
from housecall.workspace import inbox
from housecall.workspace.views import care_actor

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)
TEMPLATE_LIST = "messaging/threads.html"
TEMPLATE_THREAD = "messaging/thread.html"


def _not_found(request: Request, back: str) -> Response:
    return render(request, "identity/error.html", status=404, title=_("Not found"),
                  message=_("There is no such conversation, or it is not yours to see."), back=back)  # fmt: skip


def _text(form: FormData, name: str, limit: int) -> str:
    """The field's text, trimmed; kept whole up to twice the limit so the page can show it back
    with the error (a longer value is no typing a browser with ``maxlength`` lets through)."""
    value = form.get(name)
    return value.strip()[: 2 * limit] if isinstance(value, str) else ""


async def _file(form: FormData, errors: FormErrors) -> attachments.File | None:
    """The attachment of the form, checked; an error beside the field when it is refused."""
    upload = form.get("attachment")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return None
    data = await upload.read(attachments.MAX_BYTES + 1)
    try:
        return attachments.check(data, upload.filename)
    except attachments.Refused as exc:
        errors.add("attachment", str(exc))
        return None


def _check_message(text: str, file: attachments.File | None, errors: FormErrors, *, need_text: bool) -> None:
    if len(text) > model.MAX_TEXT:
        errors.add("text", _("The message must be %(n)s characters or fewer.") % {"n": model.MAX_TEXT})
    elif need_text and not text:
        errors.add("text", _("Write your message."))
    elif not text and file is None and "attachment" not in errors:
        errors.add("text", _("Write a message or attach a file."))


# -- the portal ---------------------------------------------------------------------------------------


async def _threads_page(request: Request, actor: Actor, *, errors: FormErrors | None = None,
                        values: dict[str, str] | None = None, status: int = 200) -> Response:  # fmt: skip
    assert actor.patient_id is not None
    async with records.reading(request, actor) as rec:
        threads = await model.threads_of(rec, actor.patient_id)
        pools = await model.pools(rec)
    names = {p.id: p.name for p in pools}
    reader = actor.fhir_user or ""
    return render(request, TEMPLATE_LIST, status=status, threads=threads, pools=pools, pool_names=names,
                  reader=reader, errors=errors or FormErrors(), values=values or {},
                  max_mb=attachments.MAX_BYTES // (1024 * 1024))  # fmt: skip


@router.get("/portal/messages")
async def portal_threads(request: Request) -> Response:
    # Patients and proxies: the chosen patient's conversations and the form to start one.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    return await _threads_page(request, actor)


@router.post("/portal/messages")
async def portal_new_thread(request: Request) -> Response:
    # Patients and proxies: a new conversation with a pool of the organization; CSRF-checked.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    assert actor.patient_id is not None
    form = await request.form()
    values = {"topic": _text(form, "topic", model.MAX_TOPIC), "pool": _text(form, "pool", 64),
              "text": _text(form, "text", model.MAX_TEXT)}  # fmt: skip
    errors = FormErrors()
    if not values["topic"]:
        errors.add("topic", _("Say what the message is about."))
    elif len(values["topic"]) > model.MAX_TOPIC:
        errors.add("topic", _("The subject must be %(n)s characters or fewer.") % {"n": model.MAX_TOPIC})
    async with records.reading(request, actor) as rec:
        pool = await model.pool_of(rec, values["pool"]) if values["pool"] else None
    if pool is None:
        errors.add("pool", _("Choose who should read your message."))
    file = await _file(form, errors)
    _check_message(values["text"], file, errors, need_text=True)
    if not actor.fhir_user:
        errors.add("form", _("Your account cannot send messages for this patient."))
    if errors or pool is None or not actor.fhir_user:
        return await _threads_page(request, actor, errors=errors, values=values, status=400)
    async with records.writing(request, actor) as rec:
        thread = await model.start_thread(rec, patient_id=actor.patient_id, sender=actor.fhir_user, pool=pool.id,
                                          topic=values["topic"], text=values["text"], file=file)  # fmt: skip
    return RedirectResponse(model.portal_link(thread.id) + "?sent=1", status_code=303)


async def _thread_page(request: Request, actor: Actor, thread_id: str, *, side: str,
                       errors: FormErrors | None = None, values: dict[str, str] | None = None,
                       status: int = 200, notice: str | None = None) -> Response:  # fmt: skip
    back = "/portal/messages" if side == "portal" else "/workspace?kind=message"
    async with records.writing(request, actor) as rec:
        thread = await model.load_thread(rec, thread_id)
        if thread is None or (side == "portal" and thread.patient_id != actor.patient_id):
            return _not_found(request, back)
        # Unread for this reader when the page was asked for (shown as "new"), then read.
        new = {m.id for m in thread.messages if actor.fhir_user and m.unread_for(actor.fhir_user)}
        if actor.fhir_user:
            await model.mark_read(rec, thread, actor.fhir_user)
        pool = await model.pool_of(rec, thread.pool)
        work = await model.open_work(rec, thread) if side == "workspace" else []
        patient = await rec.read("Patient", thread.patient_id) if side == "workspace" else None
    return render(request, TEMPLATE_THREAD, status=status, thread=thread, side=side, new=new, pool=pool,
                  response=pool.response if pool else model.response_text(model.DEFAULT_RESPONSE_DAYS),
                  work=work, patient_name=inbox.person_name(patient), reader=actor.fhir_user or "",
                  base=(model.portal_link if side == "portal" else model.workspace_link)(thread.id),
                  back=back, errors=errors or FormErrors(), values=values or {}, notice=notice,
                  max_mb=attachments.MAX_BYTES // (1024 * 1024))  # fmt: skip


@router.get("/portal/messages/{thread_id}")
async def portal_thread(request: Request, thread_id: str, sent: str = "") -> Response:
    # Patients and proxies: one conversation of the chosen patient (404 for anyone else's); reading
    # it marks its messages read for this reader.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    notice = _("Your message was sent.") if sent else None
    return await _thread_page(request, actor, thread_id, side="portal", notice=notice)


async def _reply(request: Request, actor: Actor, thread_id: str, side: str) -> Response:
    form = await request.form()
    values = {"text": _text(form, "text", model.MAX_TEXT)}
    errors = FormErrors()
    file = await _file(form, errors)
    _check_message(values["text"], file, errors, need_text=False)
    if not actor.fhir_user:
        errors.add("form", _("Your account cannot send messages for this patient."))
    if errors or not actor.fhir_user:
        return await _thread_page(
            request, actor, thread_id, side=side, errors=errors, values=values, status=400
        )
    async with records.writing(request, actor) as rec:
        thread = await model.load_thread(rec, thread_id)
        if thread is None or (side == "portal" and thread.patient_id != actor.patient_id):
            return _not_found(request, "/portal/messages" if side == "portal" else "/workspace")
        await model.reply(rec, thread, sender=actor.fhir_user, text=values["text"], file=file)
    link = model.portal_link(thread_id) if side == "portal" else model.workspace_link(thread_id)
    return RedirectResponse(link + "?sent=1", status_code=303)


@router.post("/portal/messages/{thread_id}")
async def portal_reply(request: Request, thread_id: str) -> Response:
    # Patients and proxies: a reply in one of the chosen patient's conversations; CSRF-checked.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    return await _reply(request, actor, thread_id, "portal")


async def _download(request: Request, actor: Actor, thread_id: str, message_id: str, side: str) -> Response:
    async with records.reading(request, actor) as rec:
        thread = await model.load_thread(rec, thread_id)
        if thread is None or (side == "portal" and thread.patient_id != actor.patient_id):
            found = None
        else:
            found = await model.binary_of(rec, thread, message_id)
    if found is None:
        return _not_found(request, "/portal/messages" if side == "portal" else "/workspace")
    data, content_type, filename = found
    return Response(data, media_type=content_type, headers={
        "Content-Disposition": attachments.content_disposition(filename), "Cache-Control": "no-store",
    })  # fmt: skip


@router.get("/portal/messages/{thread_id}/attachments/{message_id}")
async def portal_attachment(request: Request, thread_id: str, message_id: str) -> Response:
    # Patients and proxies: the file of a message in one of the chosen patient's conversations, as
    # a download (404 for anyone else's, like the conversation itself).
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    return await _download(request, actor, thread_id, message_id, "portal")


# -- the workspace ------------------------------------------------------------------------------------


@router.get("/workspace/messages/{thread_id}")
async def workspace_thread(request: Request, thread_id: str, sent: str = "", done: str = "") -> Response:
    # Care team only: a conversation of one of the person's patients (404 otherwise).
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    notice = _("Your reply was sent.") if sent else _("Marked as done.") if done else None
    return await _thread_page(request, actor, thread_id, side="workspace", notice=notice)


@router.post("/workspace/messages/{thread_id}")
async def workspace_reply(request: Request, thread_id: str) -> Response:
    # Care team only: a reply to the patient, which completes the conversation's inbox item.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    return await _reply(request, actor, thread_id, "workspace")


@router.post("/workspace/messages/{thread_id}/done")
async def workspace_done(request: Request, thread_id: str) -> Response:
    # Care team only: the conversation needs no reply; its inbox item is completed. CSRF-checked.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    if not actor.fhir_user:
        return _not_found(request, "/workspace")
    async with records.writing(request, actor) as rec:
        thread = await model.load_thread(rec, thread_id)
        if thread is None:
            return _not_found(request, "/workspace")
        await model.complete(rec, thread, actor.fhir_user)
    return RedirectResponse(model.workspace_link(thread_id) + "?done=1", status_code=303)


@router.get("/workspace/messages/{thread_id}/attachments/{message_id}")
async def workspace_attachment(request: Request, thread_id: str, message_id: str) -> Response:
    # Care team only: the file of a message of one of the person's patients, as a download.
    actor = await care_actor(request)
    if isinstance(actor, Response):
        return actor
    return await _download(request, actor, thread_id, message_id, "workspace")


# -- the inbox and the home page ----------------------------------------------------------------------


@inbox.item_page("message")
def _work_page(task: dict[str, Any]) -> str:
    focus = str((task.get("focus") or {}).get("reference") or "")
    return model.workspace_link(focus.removeprefix("Communication/"))


@home.provider
async def _unread(rec: records.Records, patient_id: str) -> list[home.Attention]:
    reader = rec.actor.fhir_user
    if not reader:
        return []
    n = await model.unread_count(rec, patient_id, reader)
    if not n:
        return []
    # The home page shows the number in a badge before the words.
    return [home.Attention(ngettext("unread message", "unread messages", n), "/portal/messages", count=n)]


def install(app: FastAPI) -> None:
    app.include_router(router)
