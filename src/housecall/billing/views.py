"""The portal's bills: statements, the balance due, paying by card, receipts (page and PDF).

Every route is for patients and proxies (policy PORTAL) and sits behind the CSRF guard; the patient
comes from the session. A statement or receipt that is not the patient's answers 404, as a missing
one does (the access path decides, ``statements.statement``).
"""

from __future__ import annotations

import secrets
from decimal import Decimal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from housecall.billing import payments as pay
from housecall.billing import statements as st
from housecall.portal import home
from housecall.portal.views import portal_actor
from housecall.web import csrf, i18n, pdf, records
from housecall.web.i18n import _
from housecall.web.pages import FormErrors, render
from housecall.web.records import Records

router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)
FIELDS = ("amount", "card_number", "expiry", "cvc", "name")


def provider(request: Request) -> pay.PaymentProvider:
    return request.app.state.payments  # type: ignore[no-any-return]


def _not_found(request: Request) -> Response:
    return render(request, "identity/error.html", status=404, title=_("Not found"),
                  message=_("We could not find that bill."), back="/portal/bills")  # fmt: skip


@home.provider
async def balance_due(rec: Records, patient_id: str) -> list[home.Attention]:
    """The home page's "balance due" line, when something is owed."""
    due = await st.balance_due(rec, patient_id)
    if due.amount <= 0:
        return []
    text = _("Balance due: %(amount)s") % {"amount": st.money(due.amount, due.currency)}
    return [home.Attention(text, "/portal/bills", count=due.statements, action=_("Pay"))]


@router.get("/portal/bills")
async def bills_page(request: Request) -> Response:
    # Patients and proxies: the chosen patient's statements and what is owed.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    assert actor.patient_id is not None
    async with records.reading(request, actor) as rec:
        items = await st.statements(rec, actor.patient_id)
    due = sum((s.balance for s in items), Decimal(0))
    currency = items[0].currency if items else "USD"
    return render(request, "billing/bills.html", statements=items, due=st.money(due, currency), owed=due > 0)


async def _bill(request: Request, invoice_id: str, *, status: int = 200, errors: FormErrors | None = None,
                values: dict[str, str] | None = None, notice: str | None = None) -> Response:  # fmt: skip
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    async with records.reading(request, actor) as rec:
        stmt = await st.statement(rec, invoice_id)
    if stmt is None:
        return _not_found(request)
    values = values or {"amount": f"{stmt.balance:.2f}" if stmt.open else ""}
    return render(request, "billing/bill.html", status=status, s=stmt, errors=errors or FormErrors(),
                  values=values, notice=notice, key=secrets.token_urlsafe(16))  # fmt: skip


@router.get("/portal/bills/{invoice_id}")
async def bill_page(request: Request, invoice_id: str) -> Response:
    # Patients and proxies: one statement (their own only), its lines, payments and the pay form.
    return await _bill(request, invoice_id)


@router.post("/portal/bills/{invoice_id}/pay")
async def pay_bill(request: Request, invoice_id: str) -> Response:
    # Patients and proxies, CSRF-checked: pay their own statement by card; errors beside the field.
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    form = await request.form()
    typed = {k: str(form.get(k) or "")[:200] for k in (*FIELDS, "version", "key")}
    kept = {k: typed[k] for k in ("amount", "card_number", "expiry", "name")}  # never the security code
    async with records.reading(request, actor) as rec:
        stmt = await st.statement(rec, invoice_id)
    if stmt is None:
        return _not_found(request)
    if not stmt.open:
        return await _bill(request, invoice_id, status=409, values=kept,
                           notice=_("Nothing is owed on this statement."))  # fmt: skip
    errors = FormErrors()
    amount = pay.parse_amount(typed["amount"], stmt.balance, errors, stmt.currency)
    card = pay.parse_card(typed, errors)
    if not typed["version"].isdigit() or int(typed["version"]) != stmt.version:
        errors.add(
            "form", _("This statement changed while you were paying. Check the balance and try again.")
        )
    if errors or amount is None or card is None:
        return await _bill(request, invoice_id, status=400, errors=errors, values=kept)
    payments = provider(request)
    # The form's one-time key, with what it pays: the same form sent twice is one charge (and one
    # receipt), while the same form sent again with another amount is a new payment.
    key = f"{typed['key'] or secrets.token_urlsafe(16)}:{invoice_id}:{amount}"
    try:
        charge = await payments.charge(
            card, amount, stmt.currency, reference=f"Invoice/{invoice_id}", key=key
        )
    except pay.Declined as exc:
        errors.add("card_number", exc.message)
        return await _bill(request, invoice_id, status=400, errors=errors, values=kept)
    try:
        async with records.writing(request, actor) as rec:
            receipt_id = await pay.record(rec, invoice_id, stmt.version, charge, system=payments.system)
    except (pay.Changed, pay.TooMuch, LookupError):
        async with records.reading(request, actor) as rec:
            recorded = await pay.find_receipt(rec, payments.system, charge.id)
        if recorded is not None:  # a twin request recorded this very charge first
            return RedirectResponse(f"/portal/bills/receipts/{recorded}", status_code=303)
        await payments.void(charge, "statement changed before the payment was recorded")
        errors.add("form", _("This statement changed while you were paying, so the card was not charged. "
                             "Check the balance and try again."))  # fmt: skip
        return await _bill(request, invoice_id, status=409, errors=errors, values=kept)
    except BaseException:
        await payments.void(charge, "the payment could not be recorded")
        raise
    return RedirectResponse(f"/portal/bills/receipts/{receipt_id}", status_code=303)


async def _receipt(request: Request, receipt_id: str) -> pay.Receipt | Response:
    actor = await portal_actor(request)
    if isinstance(actor, Response):
        return actor
    async with records.reading(request, actor) as rec:
        found = await pay.receipt(rec, receipt_id)
    if found is None:
        return render(request, "identity/error.html", status=404, title=_("Not found"),
                      message=_("We could not find that receipt."), back="/portal/bills")  # fmt: skip
    return found


@router.get("/portal/bills/receipts/{receipt_id}.pdf")
async def receipt_pdf(request: Request, receipt_id: str) -> Response:
    # Patients and proxies: their own receipt as a PDF to keep.
    r = await _receipt(request, receipt_id)
    if isinstance(r, Response):
        return r
    title = _("Payment receipt")
    rows = [
        (_("Receipt number"), r.id),
        (_("Date"), i18n.datetime_text(r.date)),
        (_("Statement"), r.number),
        (_("Amount paid"), st.money(r.amount, r.currency)),
        (_("Paid with"), _("%(brand)s ending in %(last4)s") % {"brand": r.brand, "last4": r.last4}),
        (_("Transaction"), r.charge_id),
    ]
    if r.balance_now is not None:
        rows.append((_("Balance due now"), st.money(r.balance_now, r.currency)))
    body = pdf.document(
        title, [pdf.Section(pairs=rows)], footer=_("Thank you for your payment."), author="Housecall"
    )
    return Response(body, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="receipt-{r.id}.pdf"', "Cache-Control": "no-store"})  # fmt: skip


@router.get("/portal/bills/receipts/{receipt_id}")
async def receipt_page(request: Request, receipt_id: str) -> Response:
    # Patients and proxies: their own receipt, with a PDF to download.
    r = await _receipt(request, receipt_id)
    if isinstance(r, Response):
        return r
    return render(request, "billing/receipt.html", r=r, amount=st.money(r.amount, r.currency),
                  balance=st.money(r.balance_now or Decimal(0), r.currency))  # fmt: skip


def install(app: FastAPI) -> None:
    if getattr(app.state, "payments", None) is None:
        app.state.payments = pay.LocalProvider()
    app.include_router(router)
