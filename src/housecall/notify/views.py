"""Notification pages: each account's own choices (``/account/notifications``) and the
organization's delivery log for staff (``/admin/outbox``).

Every route states its policy; all sit behind the CSRF guard. The staff page shows masked
addresses, kinds, statuses and times only: never a name, a text or a full address.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from housecall.access.actor import Role
from housecall.core.db import Database
from housecall.identity import sessions
from housecall.identity.clock import clock
from housecall.notify import service
from housecall.notify.channels import CHANNELS, EMAIL, PUSH, SMS
from housecall.notify.service import Preferences
from housecall.notify.texts import LANGUAGE_NAMES, Kind
from housecall.web import csrf
from housecall.web.i18n import _
from housecall.web.pages import FormErrors, render

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)

# Front desk works the SMS call-backs, admins answer for the organization: both see the outbox.
OUTBOX_ROLES = frozenset({Role.ORG_ADMIN, Role.FRONT_DESK})
SUMMARY_DAYS = 7


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def channel_labels() -> dict[str, str]:
    return {EMAIL: _("E-mail"), SMS: _("Text message"), PUSH: _("Web push")}


def status_labels() -> dict[str, str]:
    return {service.QUEUED: _("waiting"), service.SENDING: _("being sent"), service.SENT: _("sent"),
            service.FAILED: _("failed")}  # fmt: skip


def kind_labels() -> dict[str, str]:
    return {
        Kind.NEW_MESSAGE: _("New message"), Kind.REFILL_DECIDED: _("Request answered"),
        Kind.RESULT_RELEASED: _("Record updated"), Kind.APPOINTMENT_REMINDER: _("Appointment reminder"),
        Kind.APPOINTMENT_CHANGED: _("Appointment changed"), Kind.STATEMENT_READY: _("Statement ready"),
        Kind.VISIT_STARTING: _("Visit starting"), Kind.VISIT_JOIN: _("Visit join link"),
        Kind.FORMS_DUE: _("Forms before a visit"),
    }  # fmt: skip


def _when(us: int | None) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M") if us else ""


# --------------------------------------------------------------------------------------------------
# The account's own choices


def _values(prefs: Preferences) -> dict[str, object]:
    return {"email": prefs.email, "sms": prefs.sms, "push": prefs.push, "phone": prefs.phone or "",
            "language": prefs.language.value}  # fmt: skip


def _preferences_page(request: Request, email: str, *, status: int = 200, **context: Any) -> Response:
    return render(request, "notify/preferences.html", status=status, email=email,
                  languages=list(LANGUAGE_NAMES.items()), **context)  # fmt: skip


@router.get("/account/notifications")
async def preferences_page(request: Request, notice: str | None = None) -> Response:
    # Signed-in session (any kind): the account's own channels and language.
    state = await sessions.require_signed_in(request)
    async with _db(request).reader() as conn:
        prefs = await service.get_preferences(conn, state.account.id)
    return _preferences_page(
        request, state.account.email, values=_values(prefs),
        notice=_("Your choices are saved.") if notice == "saved" else None,
    )  # fmt: skip


@router.post("/account/notifications")
async def preferences_save(request: Request) -> Response:
    # Signed-in session; CSRF-checked. Changes only the signed-in account's own choices.
    state = await sessions.require_signed_in(request)
    form = await request.form()

    def text(name: str, limit: int) -> str:
        value = form.get(name)
        return value[:limit] if isinstance(value, str) else ""

    values: dict[str, object] = {
        "email": text("email", 3) == "on", "sms": text("sms", 3) == "on", "push": text("push", 3) == "on",
        "phone": text("phone", 40).strip(), "language": text("language", 8),
    }  # fmt: skip
    prefs, problems = service.preferences_from_form(
        bool(values["email"]), bool(values["sms"]), bool(values["push"]), str(values["phone"]),
        str(values["language"]),
    )  # fmt: skip
    if prefs is None:
        errors = FormErrors({name: _(message) for name, message in problems.items()})
        return _preferences_page(request, state.account.email, status=400, errors=errors, values=values)
    async with _db(request).transaction() as conn:
        await service.save_preferences(conn, state.account.id, prefs)
    return RedirectResponse("/account/notifications?notice=saved", status_code=303)


# --------------------------------------------------------------------------------------------------
# Staff: what went out


def _not_found(request: Request) -> Response:
    return render(request, "identity/error.html", status=404, title=_("Page not found"),
                  message=_("There is nothing here."), back="/account")  # fmt: skip


@router.get("/admin/outbox")
async def outbox_page(request: Request, channel: str = "", status: str = "") -> Response:
    # Organization admins and front desk (policy FRONT_DESK) of the signed-in account's own
    # organization: its recent deliveries, masked.
    state = await sessions.require_signed_in(request)
    if not OUTBOX_ROLES & state.account.roles:
        return _not_found(request)
    org_id = state.account.org_id
    channel = channel if channel in CHANNELS else ""
    status = status if status in service.STATUSES else ""
    since = clock.now_us() - SUMMARY_DAYS * 86400 * 1_000_000
    async with _db(request).reader() as conn:
        rows = await service.recent_deliveries(conn, org_id, channel=channel or None, status=status or None)
        counts = await service.delivery_counts(conn, org_id, since)
    return render(
        request, "notify/outbox.html", rows=rows, counts=counts, channels=channel_labels(),
        statuses=status_labels(), kinds=kind_labels(), when=_when, days=SUMMARY_DAYS,
        values={"channel": channel, "status": status},
    )  # fmt: skip


def install(app: FastAPI) -> None:
    app.include_router(router)
