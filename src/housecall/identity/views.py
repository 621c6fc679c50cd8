"""Sign-in pages: sign-in, second factor, MFA enrolment, re-authentication, password reset, e-mail
verification, sign-out, the account page and the organization admin's account list.

Every route states its policy in a comment. All of them sit on ``router``, whose CSRF dependency
checks every state-changing request before the handler runs. Units of work end before the
response is built; mail is sent after the commit.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import qrcode
import qrcode.image.svg
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup

from housecall.access.actor import ActorKind, Role
from housecall.core.db import Database
from housecall.core.mail import Outbox
from housecall.core.settings import Settings
from housecall.identity import passwords, service, sessions, throttle
from housecall.identity.clock import clock
from housecall.identity.service import Account, IdentityError
from housecall.identity.sessions import ENROL, FULL, MFA, SessionState, SignInRequired, safe_next
from housecall.notify.views import OUTBOX_ROLES
from housecall.web import csrf, i18n
from housecall.web.i18n import Msg, _
from housecall.web.pages import FormErrors, install_static, render

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)

WRONG_CREDENTIALS = Msg("The e-mail address or password is not right.")
RESET_REQUESTS_PER_HOUR = 5


def _db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


def _text(form: Any, name: str, limit: int = 1024) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def _too_many(request: Request, template: str, retry_after: int, **context: Any) -> Response:
    minutes = max(1, (retry_after + 59) // 60)
    errors = FormErrors(form=_("Too many attempts. Try again in %(n)s minutes.") % {"n": minutes})
    return render(
        request, template, status=429, headers={"Retry-After": str(retry_after)}, errors=errors, **context
    )


def _with_cookie(response: Response, raw: str) -> Response:
    sessions.set_session_cookie(response, raw)
    return response


# --------------------------------------------------------------------------------------------------
# Sign-in


@router.get("/signin")
async def signin_page(request: Request, next: str | None = None, signed_out: str | None = None) -> Response:
    # Public: the sign-in form.
    notice = _("You are signed out.") if signed_out else None
    return render(request, "identity/signin.html", next=safe_next(next), notice=notice)


@router.post("/signin")
async def signin(request: Request) -> Response:
    # Public: checks a password; throttled per e-mail and per address; CSRF by double submit.
    form = await request.form()
    email, password = _text(form, "email", 254).strip(), _text(form, "password", 1024)
    next_path = safe_next(_text(form, "next"))
    errors = FormErrors()
    if not email:
        errors.add("email", _("Enter your e-mail address."))
    if not password:
        errors.add("password", _("Enter your password."))
    if errors:
        return render(
            request,
            "identity/signin.html",
            status=400,
            errors=errors,
            values={"email": email},
            next=next_path,
        )
    settings = _settings(request)

    async def check(db: Database) -> Account | None:
        return await service.check_credentials(db, email, password, settings)

    result = await sessions.attempt(_db(request), settings, email, sessions.client_address(request), check)
    if result.retry_after is not None:
        return _too_many(
            request, "identity/signin.html", result.retry_after, values={"email": email}, next=next_path
        )
    account = result.account
    if account is None:
        # The same answer whether the address has no account, a wrong password or is disabled.
        errors.add("email", _(WRONG_CREDENTIALS))
        return render(
            request,
            "identity/signin.html",
            status=400,
            errors=errors,
            values={"email": email},
            next=next_path,
        )
    stage = MFA if account.mfa_enrolled else ENROL if account.requires_mfa else FULL
    old = await sessions.load_session(request)
    async with _db(request).transaction() as conn:
        raw = await sessions.start_session(conn, account, stage, replaces=old.id_hash if old else None)
        lang = await i18n.saved_language(conn, account.id)
    target = {MFA: "/signin/mfa", ENROL: "/mfa/enrol", FULL: next_path}[stage]
    if stage != FULL:
        target += "?next=" + quote(next_path, safe="/")
    response = _with_cookie(_redirect(target), raw)
    if lang is not None:  # the account's saved language follows the person to this device
        i18n.remember(response, lang)
    return response


async def _pending(request: Request, stage: str) -> SessionState:
    state = await sessions.load_session(request)
    if state is None or state.stage != stage:
        raise SignInRequired(sessions.signin_url(request.query_params.get("next")))
    return state


@router.get("/signin/mfa")
async def mfa_page(request: Request, next: str | None = None) -> Response:
    # Session at the second-factor stage only.
    await _pending(request, MFA)
    return render(request, "identity/mfa_challenge.html", next=safe_next(next))


@router.post("/signin/mfa")
async def mfa_submit(request: Request) -> Response:
    # Session at the second-factor stage only; throttled with the password attempts.
    state = await _pending(request, MFA)
    form = await request.form()
    code, recovery = _text(form, "code", 20), _text(form, "recovery", 40)
    next_path = safe_next(_text(form, "next"))
    if not code.strip() and not recovery.strip():
        errors = FormErrors(code=_("Enter the 6-digit code from your app."))
        return render(request, "identity/mfa_challenge.html", status=400, errors=errors, next=next_path)
    account = state.account

    async def check(db: Database) -> Account | None:
        async with db.transaction() as conn:
            ok = (
                await service.check_totp(conn, account.id, code)
                if code.strip()
                else await service.use_recovery_code(conn, account.id, recovery)
            )
        return account if ok else None

    result = await sessions.attempt(
        _db(request), _settings(request), account.email, sessions.client_address(request), check
    )
    if result.retry_after is not None:
        return _too_many(request, "identity/mfa_challenge.html", result.retry_after, next=next_path)
    if result.account is None:
        field = "code" if code.strip() else "recovery"
        errors = FormErrors({field: _("That code is not right, or was used already.")})
        return render(request, "identity/mfa_challenge.html", status=400, errors=errors, next=next_path)
    async with _db(request).transaction() as conn:
        raw = await sessions.promote(conn, state, FULL)
    return _with_cookie(_redirect(next_path), raw)


# --------------------------------------------------------------------------------------------------
# MFA enrolment


async def _enrolling(request: Request) -> SessionState:
    state = await sessions.load_session(request)
    if state is None or state.stage not in (ENROL, FULL):
        raise SignInRequired(sessions.signin_url("/mfa/enrol"))
    return state


def _qr_svg(uri: str) -> Markup:
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=10, border=2)
    svg = image.to_string(encoding="unicode")
    svg = svg.split("?>", 1)[-1].strip()  # drop the XML declaration: the SVG sits inside HTML
    return Markup(svg.replace("<svg ", '<svg role="img" aria-label="QR code" focusable="false" ', 1))  # noqa: S704 - our own SVG


def _enrol_page(request: Request, state: SessionState, secret: str, next_path: str, **extra: Any) -> Response:
    groups = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    return render(
        request,
        "identity/mfa_enrol.html",
        qr_svg=_qr_svg(service.totp_uri(state.account.email, secret)),
        secret_groups=groups,
        required=state.stage == ENROL,
        next=next_path,
        **extra,
    )


@router.get("/mfa/enrol")
async def enrol_page(request: Request, next: str | None = None) -> Response:
    # Session at the enrolment stage (staff without MFA), or any signed-in account adding MFA.
    state = await _enrolling(request)
    if state.account.mfa_enrolled:
        return _redirect("/account")
    secret = state.pending_totp or service.new_totp_secret()
    if state.pending_totp is None:
        async with _db(request).transaction() as conn:
            await conn.execute(
                "UPDATE auth_session SET pending_totp = $1 WHERE id_hash = $2", secret, state.id_hash
            )
    return _enrol_page(request, state, secret, safe_next(next))


@router.post("/mfa/enrol")
async def enrol_submit(request: Request) -> Response:
    # Session at the enrolment stage, or any signed-in account adding MFA; throttled.
    state = await _enrolling(request)
    form = await request.form()
    next_path = safe_next(_text(form, "next"))
    if state.account.mfa_enrolled or state.pending_totp is None:
        return _redirect("/mfa/enrol")
    secret, code = state.pending_totp, _text(form, "code", 20)
    codes: list[str] = []

    async def check(db: Database) -> Account | None:
        async with db.transaction() as conn:
            found = await service.confirm_totp_enrolment(conn, state.account.id, secret, code)
        if found:
            codes.extend(found)
        return state.account if found else None

    result = await sessions.attempt(
        _db(request), _settings(request), state.account.email, sessions.client_address(request), check
    )
    if result.retry_after is not None:
        return _too_many(
            request,
            "identity/message.html",
            result.retry_after,
            title=_("Too many attempts"),
            message="",
            link=None,
        )
    if result.account is None:
        errors = FormErrors(
            code=_("That code is not right. Check the time on your phone and try the newest code.")
        )
        return _enrol_page(request, state, secret, next_path, errors=errors)
    async with _db(request).transaction() as conn:
        raw = await sessions.promote(conn, state, FULL)
        # Enrolling ends the account's other sessions: they were opened without the second factor.
        await service.end_all_sessions(conn, state.account.id, keep=service.sha256(raw))
    response = render(request, "identity/recovery_codes.html", codes=codes, next=next_path)
    return _with_cookie(response, raw)


# --------------------------------------------------------------------------------------------------
# Re-authentication (break-glass and other sensitive actions)


@router.get("/signin/confirm")
async def confirm_page(request: Request, next: str | None = None) -> Response:
    # Signed-in session: asks the password (and TOTP when enrolled) again.
    state = await sessions.require_signed_in(request)
    return render(request, "identity/confirm.html", next=safe_next(next), mfa=state.account.mfa_enrolled)


@router.post("/signin/confirm")
async def confirm_submit(request: Request) -> Response:
    # Signed-in session; throttled with the sign-in attempts; stamps the session's auth time.
    state = await sessions.require_signed_in(request)
    form = await request.form()
    next_path = safe_next(_text(form, "next"))
    password, code = _text(form, "password"), _text(form, "code", 20)
    account, settings = state.account, _settings(request)

    async def check(db: Database) -> Account | None:
        found = await service.check_credentials(db, account.email, password, settings)
        if found is None or found.id != account.id:
            return None
        async with db.transaction() as conn:
            if account.mfa_enrolled and not await service.check_totp(conn, account.id, code):
                return None
            await sessions.stamp_reauthenticated(conn, state)
        return found

    result = await sessions.attempt(
        _db(request), settings, account.email, sessions.client_address(request), check
    )
    context: dict[str, Any] = {"next": next_path, "mfa": account.mfa_enrolled}
    if result.retry_after is not None:
        return _too_many(request, "identity/confirm.html", result.retry_after, **context)
    if result.account is None:
        errors = FormErrors(password=_("That is not right. Try again."))
        return render(request, "identity/confirm.html", status=400, errors=errors, **context)
    return _redirect(next_path)


# --------------------------------------------------------------------------------------------------
# Sign-out


@router.get("/signout")
async def signout_page(request: Request) -> Response:
    # Signed-in session: the choice between this device and everywhere.
    await sessions.require_signed_in(request)
    return render(request, "identity/signout.html")


@router.post("/signout")
async def signout(request: Request) -> Response:
    # Any session (or none): ends it server-side and clears the cookie.
    state = await sessions.load_session(request)
    if state is not None:
        async with _db(request).transaction() as conn:
            await sessions.end_session(conn, state.id_hash)
    response = _redirect("/signin?signed_out=1")
    sessions.clear_session_cookie(response)
    return response


@router.post("/signout/everywhere")
async def signout_everywhere(request: Request) -> Response:
    # Signed-in session: ends every session of the account.
    state = await sessions.require_signed_in(request)
    async with _db(request).transaction() as conn:
        await service.end_all_sessions(conn, state.account.id)
    response = _redirect("/signin?signed_out=1")
    sessions.clear_session_cookie(response)
    return response


# --------------------------------------------------------------------------------------------------
# Password reset and e-mail verification


@router.get("/password/forgot")
async def forgot_page(request: Request) -> Response:
    # Public.
    return render(request, "identity/forgot.html")


@router.post("/password/forgot")
async def forgot_submit(request: Request) -> Response:
    # Public: always the same answer; at most 5 links per address per hour (silently).
    form = await request.form()
    email = _text(form, "email", 254).strip()
    if not email:
        errors = FormErrors(email=_("Enter your e-mail address."))
        return render(request, "identity/forgot.html", status=400, errors=errors)
    settings, outbox = _settings(request), Outbox()
    key = "reset:" + throttle.account_key(service.normalize_email(email))[5:]
    async with _db(request).transaction() as conn:
        wait, _ids = await throttle.reserve(conn, {key: RESET_REQUESTS_PER_HOUR}, clock.now_us())
        if wait is None:
            await service.request_password_reset(conn, email, outbox, settings=settings)
    await outbox.send(settings)
    return render(
        request,
        "identity/message.html",
        title=_("Check your e-mail"),
        message=_(
            "If an account exists for that address, we sent it a link to reset the password. The link works for 30 minutes."
        ),
        link=("/signin", _("Back to sign in")),
    )


def _link_invalid(request: Request) -> Response:
    return render(
        request,
        "identity/message.html",
        status=400,
        title=_("This link does not work"),
        message=_("The link has expired or was used already. You can ask for a new one."),
        link=("/password/forgot", _("Ask for a new link")),
    )


@router.get("/password/reset")
async def reset_page(request: Request, token: str = "") -> Response:
    # Public: holder of an e-mailed reset or set-up link.
    async with _db(request).reader() as conn:
        account = await service.peek_link(conn, token[:100], ("reset", "setup")) if token else None
    if account is None:
        return _link_invalid(request)
    return render(request, "identity/reset.html", token=token, email=account.email)


@router.post("/password/reset")
async def reset_submit(request: Request) -> Response:
    # Public: holder of an e-mailed reset or set-up link; the link is used up on success.
    form = await request.form()
    token, password = _text(form, "token", 100), _text(form, "password")
    try:
        async with _db(request).transaction() as conn:
            email = (await service.peek_link(conn, token, ("reset", "setup")) or None) if token else None
            account = await service.reset_password_with_link(
                conn, token, password, settings=_settings(request)
            )
    except IdentityError as exc:
        errors = FormErrors(password=_(exc.message))
        return render(
            request,
            "identity/reset.html",
            status=400,
            errors=errors,
            token=token,
            email=email.email if email else "",
        )
    if account is None:
        return _link_invalid(request)
    response = render(
        request,
        "identity/message.html",
        title=_("Password saved"),
        message=_("Your new password is saved and every earlier session has ended. You can sign in now."),
        link=("/signin", _("Sign in")),
    )
    sessions.clear_session_cookie(response)
    return response


@router.get("/verify")
async def verify_page(request: Request, token: str = "") -> Response:
    # Public: holder of an e-mailed verification link. Using it takes a POST, so a mail scanner
    # that opens links does not use it up.
    async with _db(request).reader() as conn:
        account = await service.peek_link(conn, token[:100], ("verify",)) if token else None
    if account is None:
        return _link_invalid(request)
    return render(request, "identity/verify.html", token=token)


@router.post("/verify")
async def verify_submit(request: Request) -> Response:
    # Public: holder of an e-mailed verification link.
    form = await request.form()
    async with _db(request).transaction() as conn:
        account = await service.verify_email(conn, _text(form, "token", 100))
    if account is None:
        return _link_invalid(request)
    return render(
        request,
        "identity/message.html",
        title=_("E-mail address confirmed"),
        message=_("Thank you. Your e-mail address is confirmed."),
        link=("/account", _("Go to your account")),
    )


# --------------------------------------------------------------------------------------------------
# The account page


@router.get("/account")
async def account_page(request: Request, notice: str | None = None) -> Response:
    # Signed-in session (any kind): who you are, with links.
    state = await sessions.require_signed_in(request)
    account = state.account
    async with _db(request).reader() as conn:
        org = await service.get_organization(conn, account.org_id)
        grants = await service.proxy_grants(conn, account.id) if account.kind is ActorKind.PROXY else []
    notices = {
        "verify-sent": _("We sent you an e-mail with a link to confirm your address."),
        "switched": _("Switched."),
        "password": _("Your new password is saved. Your other sessions have ended."),
    }
    return render(
        request,
        "identity/account.html",
        account=account,
        org_name=org.name if org else account.org_id,
        grants=grants,
        acting_for=state.acting_for if any(g.patient_id == state.acting_for for g in grants) else None,
        is_admin=Role.ORG_ADMIN in account.roles,
        sees_outbox=bool(OUTBOX_ROLES & account.roles),
        notice=notices.get(notice or ""),
    )


@router.get("/account/password")
async def password_page(request: Request) -> Response:
    # Signed-in session: change the password (the current one is asked again).
    state = await sessions.require_signed_in(request)
    return render(request, "identity/password.html", email=state.account.email)


@router.post("/account/password")
async def password_submit(request: Request) -> Response:
    # Signed-in session; the current password is checked through the throttle; the account's
    # other sessions end.
    state = await sessions.require_signed_in(request)
    form = await request.form()
    current, new = _text(form, "current_password"), _text(form, "new_password")
    settings, account = _settings(request), state.account
    errors = FormErrors()
    problem = passwords.password_problem(new, account.email)
    if problem:
        errors.add("new_password", _(problem))

    async def check(db: Database) -> Account | None:
        return await service.check_credentials(db, account.email, current, settings)

    result = await sessions.attempt(
        _db(request), settings, account.email, sessions.client_address(request), check
    )
    if result.retry_after is not None:
        return _too_many(request, "identity/password.html", result.retry_after, email=account.email)
    if result.account is None or result.account.id != account.id:
        errors = FormErrors(current_password=_("That is not your current password."), **errors)
    if errors:
        return render(request, "identity/password.html", status=400, errors=errors, email=account.email)
    async with _db(request).transaction() as conn:
        await service.set_password(conn, account.id, new, settings=settings)  # ends every session
        raw = await sessions.start_session(conn, account, FULL)
        await conn.execute(
            "UPDATE auth_session SET created = $1 WHERE id_hash = $2", state.created, service.sha256(raw)
        )  # the absolute limit still counts from the original sign-in
    return _with_cookie(_redirect("/account?notice=password"), raw)


@router.post("/account/verify-email")
async def resend_verification(request: Request) -> Response:
    # Signed-in session: sends a new confirmation link to the account's own address.
    state = await sessions.require_signed_in(request)
    settings, outbox = _settings(request), Outbox()
    if not state.account.email_verified:
        async with _db(request).transaction() as conn:
            await service.send_link(conn, state.account, "verify", outbox, settings)
        await outbox.send(settings)
    return _redirect("/account?notice=verify-sent")


@router.post("/account/acting-for")
async def switch_patient(request: Request) -> Response:
    # Signed-in proxy: chooses one of the patients who granted them access (checked against the
    # active grants, never trusted from the form).
    state = await sessions.require_signed_in(request)
    form = await request.form()
    if state.account.kind is not ActorKind.PROXY:
        return _not_found(request)
    async with _db(request).transaction() as conn:
        ok = await sessions.switch_patient(conn, state, _text(form, "patient", 64) or None)
    back = "/portal" if _text(form, "next", 16) == "/portal" else "/account?notice=switched"
    return _redirect(back) if ok else _not_found(request)


# --------------------------------------------------------------------------------------------------
# Organization admin: accounts


def _not_found(request: Request) -> Response:
    return render(
        request,
        "identity/error.html",
        status=404,
        title=_("Page not found"),
        message=_("There is nothing here."),
        back="/account",
    )


async def _admin(request: Request) -> SessionState:
    state = await sessions.require_signed_in(request)
    if Role.ORG_ADMIN not in state.account.roles:
        raise _NotFound
    return state


class _NotFound(Exception):
    pass


INVITABLE_ROLES = [r for r in service.ROLE_KINDS if r != "proxy"]


async def _admin_page(request: Request, state: SessionState, *, status: int = 200, **extra: Any) -> Response:
    async with _db(request).reader() as conn:
        accounts = await service.list_accounts(conn, state.account.org_id)
        org = await service.get_organization(conn, state.account.org_id)
    return render(
        request,
        "identity/admin_accounts.html",
        status=status,
        accounts=accounts,
        org_name=org.name if org else state.account.org_id,
        roles=INVITABLE_ROLES,
        role_names=service.ROLE_NAMES,
        **extra,
    )


@router.get("/admin/accounts")
async def admin_accounts(request: Request, notice: str | None = None) -> Response:
    # Organization admin (role org_admin) of the signed-in account's organization only.
    state = await _admin(request)
    notices = {"invited": _("Invitation sent."), "done": _("Done.")}
    return await _admin_page(request, state, notice=notices.get(notice or ""))


@router.post("/admin/accounts")
async def admin_create(request: Request) -> Response:
    # Organization admin: invites an account into their own organization (set-up link by e-mail).
    state = await _admin(request)
    form = await request.form()
    values = {
        k: _text(form, k, 254).strip() for k in ("email", "display_name", "role", "patient", "practitioner")
    }
    settings, outbox = _settings(request), Outbox()
    try:
        async with _db(request).transaction() as conn:
            await service.create_account(
                conn,
                state.account.org_id,
                values["email"],
                values["role"],
                patient_id=values["patient"] or None,
                practitioner_id=values["practitioner"] or None,
                display_name=values["display_name"] or None,
                outbox=outbox,
                settings=settings,
            )
    except IdentityError as exc:
        field = {"org": "email", None: "email"}.get(exc.field, exc.field) or "email"
        return await _admin_page(
            request, state, status=400, errors=FormErrors({field: _(exc.message)}), values=values
        )
    await outbox.send(settings)
    return _redirect("/admin/accounts?notice=invited")


@router.post("/admin/accounts/{account_id}/{action}")
async def admin_action(request: Request, account_id: str, action: str) -> Response:
    # Organization admin: disable, enable or reset MFA of an account of their own organization
    # (the organization comes from the admin's session, so another tenant's id is "not found").
    state = await _admin(request)
    if account_id == state.account.id or action not in ("disable", "enable", "reset-mfa"):
        return _not_found(request)
    async with _db(request).transaction() as conn:
        org_id = state.account.org_id
        if action == "disable":
            ok = await service.disable_account(conn, org_id, account_id)
        elif action == "enable":
            ok = await service.enable_account(conn, org_id, account_id)
        else:
            ok = await service.reset_mfa(conn, org_id, account_id)
    return _redirect("/admin/accounts?notice=done") if ok else _not_found(request)


# --------------------------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """Add the identity pages, static files and the handlers that turn page exceptions into
    responses (303 to sign-in, 403 for a failed CSRF check, 404 for admin pages)."""
    app.include_router(router)
    install_static(app)

    async def to_signin(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return _redirect(exc.location)

    async def csrf_failed(request: Request, exc: Exception) -> Response:
        return render(
            request,
            "identity/error.html",
            status=403,
            title=_("This form has expired"),
            message=_(
                "For your security the form could not be sent. Go back, reload the page and try again."
            ),
            back="/account",
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        return _not_found(request)

    app.add_exception_handler(SignInRequired, to_signin)
    app.add_exception_handler(csrf.CsrfFailed, csrf_failed)
    app.add_exception_handler(_NotFound, not_found)
