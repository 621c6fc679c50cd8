"""Paying a statement by card: the ``PaymentProvider`` interface, the local provider, the checks on
what a person typed, and how a payment is written down.

A card processor (Stripe, Square …) plugs in as a ``PaymentProvider``: ``charge`` takes the money
and answers with the processor's charge id and the card's last four digits; ``void`` gives it back
when Housecall could not record the payment (the statement changed, the database failed). The
``LocalProvider`` is the one that runs here and in tests: it checks the card the way a processor
does, declines the processor test cards that are meant to be declined, and keeps its own ledger of
charges and voids in memory (an outbox staff could read), so nothing pretends a payment went through.

The card number goes to the provider and nowhere else: it is never stored, logged or put in a
resource; only the last four digits and the brand are kept, on the receipt.

A payment is written as FHIR, in one transaction with a check that the Invoice is still the version
the patient paid against (two payments at once cannot both take the last dollar):

- a **PaymentReconciliation** (the receipt): amount, date, the provider's charge id as
  ``paymentIdentifier``, one ``detail`` naming the Invoice, the card's last four digits;
- a **PaymentNotice** with ``request`` = the Invoice and ``payment`` = the receipt, which is what
  ``statements.payments_for`` adds up;
- the **Invoice** gets a note of the payment and, once nothing is owed, status ``balanced``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from housecall.billing import statements as st
from housecall.fhir.errors import FhirError
from housecall.identity.clock import clock
from housecall.web.i18n import _
from housecall.web.pages import FormErrors
from housecall.web.records import Records

PAYMENT_TYPE = "http://terminology.hl7.org/CodeSystem/payment-type"


@dataclass(frozen=True)
class Card:
    number: str  # digits only; never stored
    exp_month: int
    exp_year: int
    cvc: str  # never stored
    name: str = ""

    @property
    def last4(self) -> str:
        return self.number[-4:]

    @property
    def brand(self) -> str:
        n = self.number
        if n.startswith("4"):
            return "Visa"
        if n[:2] in ("51", "52", "53", "54", "55") or 2221 <= int(n[:4]) <= 2720:
            return "Mastercard"
        if n[:2] in ("34", "37"):
            return "American Express"
        if n.startswith("6011") or n.startswith("65"):
            return "Discover"
        return "Card"

    def __repr__(self) -> str:  # never the number in a traceback or a log line
        return f"Card(**** {self.last4}, {self.exp_month:02d}/{self.exp_year})"


@dataclass(frozen=True)
class Charge:
    id: str
    amount: Decimal
    currency: str
    last4: str
    brand: str


class Declined(Exception):
    """The provider refused the card; ``message`` is for the person paying (translated)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PaymentProvider(Protocol):
    """Where the money moves. ``system`` is the identifier system of its charge ids."""

    system: str

    async def charge(self, card: Card, amount: Decimal, currency: str, *, reference: str, key: str) -> Charge:
        """Take ``amount`` from the card for ``reference`` (the Invoice); ``key`` makes a retried
        request charge once. Raises ``Declined``."""
        ...

    async def void(self, charge: Charge, reason: str) -> None:
        """Give a charge back in full (it could not be recorded)."""
        ...


@dataclass
class LedgerEntry:
    charge: Charge
    reference: str
    at: str
    voided: str | None = None  # the reason, once voided


# Processor test cards that are meant to fail, as the big processors document them.
DECLINED_CARDS = frozenset({"4000000000000002", "4000000000009995", "4000000000000069"})


def _declined(number: str) -> str:
    if number == "4000000000009995":
        return _("The card was declined: insufficient funds. Please use another card.")
    if number == "4000000000000069":
        return _("The card has expired. Please use another card.")
    return _("The card was declined. Please use another card.")


@dataclass
class LocalProvider:
    """The payment provider that runs without a processor: checks the card, declines the test cards
    meant to decline, and keeps every charge and void in ``ledger``."""

    system: str = "urn:housecall:payments:local"
    ledger: dict[str, LedgerEntry] = field(default_factory=dict)  # idempotency key -> entry

    async def charge(self, card: Card, amount: Decimal, currency: str, *, reference: str, key: str) -> Charge:
        if key in self.ledger and self.ledger[key].voided is None:
            return self.ledger[key].charge
        if amount <= 0 or amount != amount.quantize(st.CENTS):
            raise ValueError("a charge is a positive amount in cents")
        if not luhn_ok(card.number) or expired(card.exp_month, card.exp_year):
            raise Declined(_("The card was declined. Please check the card details."))
        if card.number in DECLINED_CARDS:
            raise Declined(_declined(card.number))
        charge = Charge("ch_" + secrets.token_hex(12), amount, currency, card.last4, card.brand)
        self.ledger[key] = LedgerEntry(charge, reference, _now_iso())
        return charge

    async def void(self, charge: Charge, reason: str) -> None:
        for entry in self.ledger.values():
            if entry.charge.id == charge.id:
                entry.voided = reason
                return
        raise LookupError(charge.id)


# -- what a person typed ----------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _today() -> datetime:
    return datetime.fromtimestamp(clock.now_us() / 1e6, UTC)


def expired(month: int, year: int) -> bool:
    """Whether a card's expiry (valid through the end of that month) has passed."""
    now = _today()
    return (year, month) < (now.year, now.month)


def _now_iso() -> str:
    return _today().isoformat(timespec="seconds").replace("+00:00", "Z")


MAX_AMOUNT = Decimal("1000000")  # no statement is this large; keeps Decimal arithmetic exact


def parse_amount(text: str, balance: Decimal, errors: FormErrors, currency: str = "USD") -> Decimal | None:
    raw = text.strip().replace("$", "").replace(",", "")
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        errors.add("amount", _("Enter the amount to pay, like 25.00."))
        return None
    if not amount.is_finite() or abs(amount) >= MAX_AMOUNT or amount != amount.quantize(st.CENTS):
        errors.add("amount", _("Enter the amount in dollars and cents, like 25.00."))
        return None
    if amount <= 0:
        errors.add("amount", _("The amount must be more than zero."))
        return None
    if amount > balance:
        message = _("The amount is more than the balance due (%(balance)s).")
        errors.add("amount", message % {"balance": st.money(balance, currency)})
        return None
    return amount


def parse_card(form: dict[str, str], errors: FormErrors) -> Card | None:
    number = re.sub(r"[\s-]", "", form.get("card_number", ""))
    if not number:
        errors.add("card_number", _("Enter the card number."))
    elif not luhn_ok(number):
        errors.add("card_number", _("The card number is not right. Check it and try again."))
    month = year = 0
    m = re.fullmatch(r"\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*", form.get("expiry", ""))
    if not m or not 1 <= int(m.group(1)) <= 12:
        errors.add("expiry", _("Enter the expiry date as it is on the card, like 04/29."))
    else:
        month, year = int(m.group(1)), int(m.group(2))
        year += 2000 if year < 100 else 0
        if expired(month, year):
            errors.add("expiry", _("This card has expired. Use a card that has not."))
    cvc = form.get("cvc", "").strip()
    if not re.fullmatch(r"\d{3,4}", cvc):
        errors.add("cvc", _("Enter the 3 or 4 digit security code from the card."))
    if errors.keys() & {"card_number", "expiry", "cvc"}:
        return None
    return Card(number, month, year, cvc, form.get("name", "").strip()[:100])


# -- writing a payment down -------------------------------------------------------------------------


class Changed(Exception):
    """The statement changed since the page showed it (another payment, the office edited it)."""


class TooMuch(Exception):
    """The amount is more than what is now owed."""


async def record(rec: Records, invoice_id: str, version: int, charge: Charge, *, system: str) -> str:
    """Write the payment against the Invoice (read as the person paying: it must be theirs), in
    ``rec``'s transaction; returns the receipt's id (the PaymentReconciliation)."""
    found = await rec.read_versioned("Invoice", invoice_id)
    if found is None:
        raise LookupError(invoice_id)
    already = await find_receipt(rec, system, charge.id)
    if already is not None:  # the same charge again (a resubmitted form): one payment, one receipt
        return already
    invoice, current = found
    if current != version or invoice.get("status") != "issued":
        raise Changed(invoice_id)
    stmt = st.statement_of(invoice, await st.payments_for(rec, invoice_id))
    if charge.amount > stmt.balance or charge.currency != stmt.currency:
        raise TooMuch(invoice_id)
    svc = st.service(rec)
    now = _now_iso()
    money = {"value": float(charge.amount), "currency": charge.currency}
    issuer = invoice.get("issuer") or {"display": "Housecall"}
    payer = rec.actor.fhir_user or f"Patient/{rec.actor.patient_id}"
    receipt = await svc.create(
        "PaymentReconciliation",
        {
            "resourceType": "PaymentReconciliation",
            "extension": [
                {"url": st.LAST4_EXTENSION, "valueString": charge.last4},
                {"url": st.BRAND_EXTENSION, "valueString": charge.brand},
            ],
            "identifier": [{"system": system, "value": charge.id}],
            "status": "active",
            "created": now,
            "outcome": "complete",
            "disposition": f"Card payment ({charge.brand} ending {charge.last4}) through the patient portal",
            "paymentDate": now[:10],
            "paymentAmount": money,
            "paymentIdentifier": {"system": system, "value": charge.id},
            "detail": [
                {
                    "type": {"coding": [{"system": PAYMENT_TYPE, "code": "payment", "display": "Payment"}]},
                    "request": {"reference": f"Invoice/{invoice_id}"},
                    "payee": issuer,
                    "date": now[:10],
                    "amount": money,
                }
            ],
            "processNote": [{"type": "display", "text": f"Paid by {payer}"}],
        },
    )
    await svc.create(
        "PaymentNotice",
        {
            "resourceType": "PaymentNotice",
            "status": "active",
            "request": {"reference": f"Invoice/{invoice_id}"},
            "created": now,
            "payment": {"reference": f"PaymentReconciliation/{receipt['id']}"},
            "paymentDate": now[:10],
            "recipient": issuer,
            "amount": money,
        },
    )
    left = stmt.balance - charge.amount
    invoice.setdefault("note", []).append(
        {
            "time": now,
            "text": f"Payment of {charge.amount} {charge.currency} received (receipt {receipt['id']}).",
        }
    )
    if left <= 0:
        invoice["status"] = "balanced"
    try:
        await svc.update(invoice, version=version)
    except FhirError as exc:
        if exc.status == 412:
            raise Changed(invoice_id) from None
        raise
    return str(receipt["id"])


async def find_receipt(rec: Records, system: str, charge_id: str) -> str | None:
    """The receipt already written for a provider's charge, if any."""
    page = await st.service(rec).search("PaymentReconciliation", [("identifier", f"{system}|{charge_id}")])
    return str(page.resources[0]["id"]) if page.resources else None


@dataclass(frozen=True)
class Receipt:
    id: str
    invoice_id: str
    number: str
    date: str
    amount: Decimal
    currency: str
    last4: str
    brand: str
    charge_id: str
    balance_now: Decimal | None = None  # what is still owed on the statement today


async def receipt(rec: Records, receipt_id: str) -> Receipt | None:
    """A receipt the reader may see: one whose Invoice the access path lets them read; else None."""
    svc = st.service(rec)
    found = await svc.read("PaymentReconciliation", receipt_id)
    if found is None:
        return None
    refs = [(d.get("request") or {}).get("reference", "") for d in found.get("detail") or []]
    invoice_id = next((r.removeprefix("Invoice/") for r in refs if r.startswith("Invoice/")), None)
    if invoice_id is None:
        return None
    stmt = await st.statement(rec, invoice_id)  # the access path decides whose it is
    if stmt is None:
        return None
    ext: dict[str, Any] = {e.get("url"): e.get("valueString", "") for e in found.get("extension") or []}
    amount = st.amount_of(found.get("paymentAmount"))
    return Receipt(
        id=receipt_id,
        invoice_id=invoice_id,
        number=stmt.number,
        date=found.get("created", ""),
        amount=amount,
        currency=(found.get("paymentAmount") or {}).get("currency", "USD"),
        last4=str(ext.get(st.LAST4_EXTENSION, "")),
        brand=str(ext.get(st.BRAND_EXTENSION, "")),
        charge_id=(found.get("paymentIdentifier") or {}).get("value", ""),
        balance_now=stmt.balance,
    )
