"""Statements as the portal shows them: a patient's Invoices with what has been paid and what is due.

An Invoice is a statement once it is ``issued`` (``draft`` ones are the billing office's work in
progress and are not shown; ``cancelled`` and ``entered-in-error`` ones owe nothing). What has been
paid is the sum of the PaymentNotices whose ``request`` is the Invoice (``payments.py`` writes one
per payment); the balance is ``totalGross`` (or the sum of the line items) less that.

PaymentNotices and PaymentReconciliations are outside every patient compartment, so the access path
keeps them from people altogether (``access.policy.RESTRICTED_TYPES``). Billing reads them as the
organization's service, and only for an Invoice the reader has just been allowed to see through the
access path: whose bill it is decides, exactly as for the Invoice itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from babel.numbers import format_currency

from housecall.access.policy import Access
from housecall.fhir import interactions as ix
from housecall.web import i18n
from housecall.web.records import Records

SHOWN_STATUSES = ("issued", "balanced")
CENTS = Decimal("0.01")
LAST4_EXTENSION = "urn:housecall:billing:card-last4"
BRAND_EXTENSION = "urn:housecall:billing:card-brand"


def service(rec: Records) -> Records:
    """The organization's billing service on the same connection and audit list as ``rec``: for the
    payment resources no person reaches directly. Call it only after ``rec`` has shown that the
    Invoice concerned is the reader's."""
    ctx = ix.Ctx(rec.conn, rec.ctx.settings, rec.ctx.base_url, Access.system(rec.actor.org_id))
    return Records(ctx, rec.address, rec.entries)


def money(value: Decimal, currency: str = "USD") -> str:
    """An amount as the reader's language writes it ($1,234.50)."""
    return format_currency(value, currency, locale="en_US" if i18n.current() == "en" else "es_US")


def amount_of(m: dict[str, Any] | None) -> Decimal:
    if not m or m.get("value") is None:
        return Decimal(0)
    return Decimal(str(m["value"])).quantize(CENTS)


def concept_text(cc: dict[str, Any] | None) -> str:
    """What a CodeableConcept says to a person: its text, else a coding's display, else the code."""
    if not cc:
        return ""
    if cc.get("text"):
        return str(cc["text"])
    for coding in cc.get("coding") or []:
        if coding.get("display"):
            return str(coding["display"])
    for coding in cc.get("coding") or []:
        if coding.get("code"):
            return str(coding["code"])
    return ""


@dataclass(frozen=True)
class Line:
    description: str
    amount: Decimal


@dataclass(frozen=True)
class Payment:
    receipt: str  # PaymentReconciliation id
    date: str
    amount: Decimal
    last4: str


@dataclass
class Statement:
    id: str
    version: int
    status: str
    date: str
    number: str
    issuer: str
    currency: str
    total: Decimal
    lines: list[Line] = field(default_factory=list)
    payments: list[Payment] = field(default_factory=list)

    @property
    def paid(self) -> Decimal:
        return sum((p.amount for p in self.payments), Decimal(0))

    @property
    def balance(self) -> Decimal:
        if self.status != "issued":
            return Decimal(0)
        return max(Decimal(0), self.total - self.paid)

    @property
    def open(self) -> bool:
        return self.balance > 0

    def text(self, amount: Decimal) -> str:
        return money(amount, self.currency)


# Price components that add to a line, and those that take away from it (what the plan paid, a
# discount); "informational" ones change nothing.
ADDING = ("base", "surcharge", "tax")
SUBTRACTING = ("deduction", "discount")


def _lines(invoice: dict[str, Any]) -> list[Line]:
    out = []
    for item in invoice.get("lineItem") or []:
        amount = Decimal(0)
        for pc in item.get("priceComponent") or []:
            value = amount_of(pc.get("amount")) * Decimal(str(pc.get("factor", 1)))
            if pc.get("type") in ADDING:
                amount += value
            elif pc.get("type") in SUBTRACTING:
                amount -= value
        text = concept_text(item.get("chargeItemCodeableConcept")) or (
            item.get("chargeItemReference") or {}
        ).get("display", "")
        out.append(Line(text, amount.quantize(CENTS)))
    return out


def _number(invoice: dict[str, Any]) -> str:
    for ident in invoice.get("identifier") or []:
        if ident.get("value"):
            return str(ident["value"])
    return str(invoice["id"])


def statement_of(invoice: dict[str, Any], payments: list[Payment]) -> Statement:
    lines = _lines(invoice)
    total = amount_of(invoice.get("totalGross")) if invoice.get("totalGross") else sum(
        (line.amount for line in lines), Decimal(0)
    )  # fmt: skip
    currency = (invoice.get("totalGross") or {}).get("currency") or "USD"
    return Statement(
        id=invoice["id"],
        version=int(invoice.get("meta", {}).get("versionId", 1)),
        status=invoice.get("status", ""),
        date=invoice.get("date", ""),
        number=_number(invoice),
        issuer=(invoice.get("issuer") or {}).get("display", ""),
        currency=currency,
        total=total,
        lines=lines,
        payments=payments,
    )


def payment_of(notice: dict[str, Any], reconciliation: dict[str, Any] | None) -> Payment:
    last4 = ""
    for ext in (reconciliation or {}).get("extension") or []:
        if ext.get("url") == LAST4_EXTENSION:
            last4 = str(ext.get("valueString", ""))
    receipt = (notice.get("payment") or {}).get("reference", "").removeprefix("PaymentReconciliation/")
    return Payment(
        receipt,
        notice.get("paymentDate") or notice.get("created", ""),
        amount_of(notice.get("amount")),
        last4,
    )


async def payments_for(rec: Records, invoice_id: str) -> list[Payment]:
    """The payments made on an Invoice the reader may see (the caller checked), oldest first."""
    svc = service(rec)
    page = await svc.search(
        "PaymentNotice",
        [
            ("request", f"Invoice/{invoice_id}"),
            ("status", "active"),
            ("_sort", "_lastUpdated"),
            ("_count", "100"),
        ],
    )
    out = []
    for notice in page.resources:
        ref = (notice.get("payment") or {}).get("reference", "")
        reconciliation = await svc.read("PaymentReconciliation", ref.removeprefix("PaymentReconciliation/"))
        out.append(payment_of(notice, reconciliation))
    return out


async def statement(rec: Records, invoice_id: str) -> Statement | None:
    """One statement the reader may see (their own, or the patient's they act for), or None."""
    invoice = await rec.read("Invoice", invoice_id)
    if invoice is None or invoice.get("status") not in SHOWN_STATUSES:
        return None
    return statement_of(invoice, await payments_for(rec, invoice_id))


async def statements(rec: Records, patient_id: str) -> list[Statement]:
    """The patient's statements, newest first."""
    page = await rec.search(
        "Invoice",
        [("patient", f"Patient/{patient_id}"), ("status", ",".join(SHOWN_STATUSES)), ("_sort", "-date"),
         ("_count", "50")],
    )  # fmt: skip
    return [statement_of(inv, await payments_for(rec, inv["id"])) for inv in page.resources]


@dataclass(frozen=True)
class Due:
    amount: Decimal
    currency: str
    statements: int


async def balance_due(rec: Records, patient_id: str) -> Due:
    """What the patient owes over all their open statements (one currency: the first one's)."""
    open_ = [s for s in await statements(rec, patient_id) if s.open]
    currency = open_[0].currency if open_ else "USD"
    total = sum((s.balance for s in open_ if s.currency == currency), Decimal(0))
    return Due(total, currency, len(open_))
