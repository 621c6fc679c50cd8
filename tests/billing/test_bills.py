"""Bills in the portal: statements, paying in full and in part by card, errors beside the field,
receipts (page and PDF), and nobody else's bill."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson

from tests.clinic import Clinic, text_of
from tests.identity.conftest import CSRF

GOOD_CARD = {"card_number": "4242 4242 4242 4242", "expiry": "12/39", "cvc": "123", "name": "Ana Reyes"}


async def make_invoice(clinic: Clinic, patient: str, number: str = "ST-1001") -> dict[str, Any]:
    org = await clinic.create({"resourceType": "Organization", "name": "Housecall Family Clinic"})
    lines = [("Video visit, established patient", 120.0), ("Home blood pressure cuff", 30.0)]
    return await clinic.create({
        "resourceType": "Invoice",
        "status": "issued",
        "identifier": [{"system": "urn:housecall:statement", "value": number}],
        "subject": {"reference": f"Patient/{patient}"},
        "date": "2026-11-02",
        "issuer": {"reference": f"Organization/{org['id']}", "display": "Housecall Family Clinic"},
        "lineItem": [
            {"sequence": i + 1, "chargeItemCodeableConcept": {"text": text},
             "priceComponent": [{"type": "base", "amount": {"value": value, "currency": "USD"}}]}
            for i, (text, value) in enumerate(lines)
        ],
        "totalNet": {"value": 150.0, "currency": "USD"},
        "totalGross": {"value": 150.0, "currency": "USD"},
    })  # fmt: skip


def form_fields(html: str) -> dict[str, str]:
    """The hidden fields of the pay form (version, key) and its CSRF token."""
    out = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))
    match = CSRF.search(html)
    assert match
    out["csrf"] = match.group(1)
    return out


async def pay(clinic: Clinic, invoice_id: str, data: dict[str, str], who: str = "patient") -> httpx.Response:
    browser = clinic.browsers[who]
    page = await browser.get(f"/portal/bills/{invoice_id}")
    assert page.status_code == 200, page.text[:300]
    return await browser.post(f"/portal/bills/{invoice_id}/pay", data={**form_fields(page.text), **data})


async def notices(clinic: Clinic, invoice_id: str) -> list[dict[str, Any]]:
    return await clinic.search("PaymentNotice", [("request", f"Invoice/{invoice_id}")])


async def test_statement_shows_lines_and_balance_and_the_home_page_says_what_is_due(clinic: Clinic) -> None:
    inv = await make_invoice(clinic, clinic.patient)
    bills = text_of((await clinic.browsers["patient"].get("/portal/bills")).text)
    assert "Statement ST-1001" in bills and "Balance due: $150.00" in bills
    page = text_of((await clinic.browsers["patient"].get(f"/portal/bills/{inv['id']}")).text)
    assert "Video visit, established patient $120.00" in page and "Home blood pressure cuff $30.00" in page
    assert "Total $150.00" in page and "Balance due $150.00" in page
    home = text_of((await clinic.browsers["patient"].get("/portal")).text)
    assert "Balance due: $150.00" in home and "Pay" in home


async def test_paying_in_full_balances_the_invoice_and_issues_a_receipt(clinic: Clinic) -> None:
    inv = await make_invoice(clinic, clinic.patient)
    r = await pay(clinic, inv["id"], {"amount": "150.00", **GOOD_CARD})
    assert r.status_code == 303, text_of(r.text)[:500]
    assert r.headers["location"].startswith("/portal/bills/receipts/")
    receipt = await clinic.browsers["patient"].get(r.headers["location"])
    text = text_of(receipt.text)
    assert receipt.status_code == 200
    assert "Amount paid $150.00" in text and "Visa ending in 4242" in text and "Balance due now $0.00" in text
    assert "ST-1001" in text

    stored = await clinic.read("Invoice", inv["id"])
    assert stored["status"] == "balanced"
    [notice] = await notices(clinic, inv["id"])
    assert notice["amount"] == {"value": 150.0, "currency": "USD"}
    receipt_id = r.headers["location"].rsplit("/", 1)[1]
    reconciliation = await clinic.read("PaymentReconciliation", receipt_id)
    assert reconciliation["detail"][0]["request"]["reference"] == f"Invoice/{inv['id']}"
    assert reconciliation["paymentIdentifier"]["value"].startswith("ch_")
    # Only the last four digits are kept, anywhere.
    for resource in (stored, notice, reconciliation):
        dumped = orjson.dumps(resource).decode()
        assert "4242424242424242" not in dumped and "4242 4242" not in dumped and '"123"' not in dumped

    pdf = await clinic.browsers["patient"].get(r.headers["location"] + ".pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF") and b"Payment receipt" in pdf.content and b"4242" in pdf.content

    page = text_of((await clinic.browsers["patient"].get(f"/portal/bills/{inv['id']}")).text)
    assert "This statement is paid in full." in page and "Pay now" not in page
    assert "Balance due" not in text_of((await clinic.browsers["patient"].get("/portal")).text)
    # Paying again is refused and charges nothing.
    again = await clinic.browsers["patient"].post(
        f"/portal/bills/{inv['id']}/pay", data={**form_fields(receipt.text), "amount": "1.00", **GOOD_CARD}
    )
    assert again.status_code == 409 and len(await notices(clinic, inv["id"])) == 1


async def test_partial_payments_reduce_the_balance_until_it_is_paid(clinic: Clinic) -> None:
    inv = await make_invoice(clinic, clinic.patient)
    r = await pay(clinic, inv["id"], {"amount": "50", **GOOD_CARD})
    assert r.status_code == 303
    assert "Balance due now $100.00" in text_of(
        (await clinic.browsers["patient"].get(r.headers["location"])).text
    )
    assert (await clinic.read("Invoice", inv["id"]))["status"] == "issued"
    page = text_of((await clinic.browsers["patient"].get(f"/portal/bills/{inv['id']}")).text)
    assert "Paid $50.00" in page and "Balance due $100.00" in page
    assert "Balance due: $100.00" in text_of((await clinic.browsers["patient"].get("/portal")).text)
    r = await pay(clinic, inv["id"], {"amount": "100.00", **GOOD_CARD})
    assert r.status_code == 303
    assert (await clinic.read("Invoice", inv["id"]))["status"] == "balanced"
    assert sorted(n["amount"]["value"] for n in await notices(clinic, inv["id"])) == [50.0, 100.0]


def error_beside(html: str, field: str) -> str:
    match = re.search(rf'<p class="error-message" id="{field}-error">(.*?)</p>', html, re.S)
    assert match, f"no error beside {field}"
    return text_of(match.group(1)).replace("Error:", "").strip()


def value_of(html: str, field: str) -> str | None:
    match = re.search(rf'<input id="{field}" name="{field}"([^>]*)>', html)
    assert match, field
    value = re.search(r' value="([^"]*)"', match.group(1))
    return value.group(1) if value else None


async def test_bad_amounts_and_cards_are_errors_beside_the_field_and_keep_what_was_typed(
    clinic: Clinic,
) -> None:
    inv = await make_invoice(clinic, clinic.patient)
    cases = [
        ({"amount": "0", **GOOD_CARD}, "amount", "more than zero"),
        ({"amount": "-5", **GOOD_CARD}, "amount", "more than zero"),
        ({"amount": "150.01", **GOOD_CARD}, "amount", "more than the balance due ($150.00)"),
        ({"amount": "ten", **GOOD_CARD}, "amount", "Enter the amount"),
        ({"amount": "20.005", **GOOD_CARD}, "amount", "dollars and cents"),
        ({"amount": "1e400", **GOOD_CARD}, "amount", "dollars and cents"),
        ({"amount": "NaN", **GOOD_CARD}, "amount", "dollars and cents"),
        (
            {"amount": "20", **GOOD_CARD, "card_number": "4242 4242 4242 4241"},
            "card_number",
            "card number is not right",
        ),
        ({"amount": "20", **GOOD_CARD, "expiry": "01/20"}, "expiry", "has expired"),
        ({"amount": "20", **GOOD_CARD, "expiry": "13/30"}, "expiry", "expiry date"),
        ({"amount": "20", **GOOD_CARD, "cvc": "12"}, "cvc", "security code"),
        ({"amount": "20", **GOOD_CARD, "card_number": "4000 0000 0000 0002"}, "card_number", "declined"),
    ]
    for data, field, message in cases:
        r = await pay(clinic, inv["id"], data)
        assert r.status_code == 400, (data, r.status_code)
        assert message in error_beside(r.text, field), (data, error_beside(r.text, field))
        assert 'aria-invalid="true"' in r.text and "There is a problem" in text_of(r.text)
        assert value_of(r.text, "amount") == data["amount"]
        assert value_of(r.text, "card_number") == data["card_number"]
        assert value_of(r.text, "cvc") is None  # the security code is never sent back
    assert await notices(clinic, inv["id"]) == []
    assert (await clinic.read("Invoice", inv["id"]))["meta"]["versionId"] == "1"
    # The declined card was never charged; nothing the provider took is left unrecorded.
    ledger = clinic.env.app.state.payments.ledger
    assert all(entry.voided for entry in ledger.values() if entry.reference == f"Invoice/{inv['id']}")


async def test_a_statement_changed_since_the_page_was_shown_is_not_charged(clinic: Clinic) -> None:
    inv = await make_invoice(clinic, clinic.patient)
    browser = clinic.browsers["patient"]
    page = await browser.get(f"/portal/bills/{inv['id']}")
    first = await browser.post(
        f"/portal/bills/{inv['id']}/pay", data={**form_fields(page.text), "amount": "10", **GOOD_CARD}
    )
    assert first.status_code == 303
    # The same form again (a double click, a second tab): the statement has moved on.
    stale = await browser.post(
        f"/portal/bills/{inv['id']}/pay", data={**form_fields(page.text), "amount": "10", **GOOD_CARD}
    )
    assert stale.status_code == 400 and "This statement changed" in text_of(stale.text)
    assert len(await notices(clinic, inv["id"])) == 1


async def test_another_patients_bill_and_receipt_answer_404(clinic: Clinic) -> None:
    mine = await make_invoice(clinic, clinic.patient)
    theirs = await make_invoice(clinic, clinic.other_patient, number="ST-2002")
    browser = clinic.browsers["patient"]
    assert "ST-2002" not in text_of((await browser.get("/portal/bills")).text)
    assert (await browser.get(f"/portal/bills/{theirs['id']}")).status_code == 404
    r = await clinic.form_post("patient", f"/portal/bills/{theirs['id']}/pay",
                               {"amount": "10", "version": "1", **GOOD_CARD}, form_from="/portal/bills")  # fmt: skip
    assert r.status_code == 404 and await notices(clinic, theirs["id"]) == []
    assert (await clinic.read("Invoice", theirs["id"]))["status"] == "issued"
    # A receipt of the other patient's payment (made by the system here) is not the patient's either.
    other_browser = clinic.env.client()
    other = await clinic.env.account("patient", patient_id=clinic.other_patient)
    await clinic.env.signin(other_browser, other.email, next="/portal")
    clinic.browsers["other"] = other_browser
    r = await pay(clinic, theirs["id"], {"amount": "10", **GOOD_CARD}, who="other")
    assert r.status_code == 303
    their_receipt = r.headers["location"]
    assert (await browser.get(their_receipt)).status_code == 404
    assert (await browser.get(their_receipt + ".pdf")).status_code == 404
    mine_paid = await pay(clinic, mine["id"], {"amount": "10", **GOOD_CARD})
    assert (await other_browser.get(mine_paid.headers["location"])).status_code == 404
    # Payments are not readable on the API by people at all (whose they are is the Invoice's).
    receipt_id = their_receipt.rsplit("/", 1)[1]
    api = await browser.get(
        f"/fhir/PaymentReconciliation/{receipt_id}", headers={"Accept": "application/fhir+json"}
    )
    assert api.status_code in (403, 404)
    assert (await browser.get("/fhir/PaymentNotice")).status_code in (403, 404)


async def test_statements_are_for_the_portal_only(clinic: Clinic) -> None:
    inv = await make_invoice(clinic, clinic.patient)
    r = await clinic.browsers["clinician"].get(f"/portal/bills/{inv['id']}")
    assert r.status_code == 403


async def test_a_charge_that_cannot_be_recorded_is_voided(clinic: Clinic) -> None:
    """The statement changes while the card is being charged (the office corrects it): the payment
    is not recorded, the charge is given back, and the patient is told."""
    from housecall.billing.payments import LocalProvider

    inv = await make_invoice(clinic, clinic.patient)
    real = clinic.env.app.state.payments

    class OfficeEditsMeanwhile(LocalProvider):
        async def charge(self, *args: Any, **kw: Any) -> Any:
            current = await clinic.read("Invoice", inv["id"])
            current["note"] = [{"text": "Corrected by the billing office"}]
            async with clinic.env.db.transaction() as conn:
                from housecall.access.policy import Access
                from housecall.fhir import interactions as ix

                ctx = ix.Ctx(
                    conn, clinic.env.settings, "https://testserver/fhir", Access.system(clinic.env.org_id)
                )
                await ix.update(ctx, "Invoice", inv["id"], current)
            return await super().charge(*args, **kw)

    provider = OfficeEditsMeanwhile()
    clinic.env.app.state.payments = provider
    try:
        r = await pay(clinic, inv["id"], {"amount": "20", **GOOD_CARD})
    finally:
        clinic.env.app.state.payments = real
    assert r.status_code == 409 and "so the card was not charged" in text_of(r.text)
    [entry] = provider.ledger.values()
    assert entry.voided and entry.charge.amount == 20
    assert await notices(clinic, inv["id"]) == []
    assert await clinic.search("PaymentReconciliation", []) == []
    assert value_of(r.text, "card_number") == GOOD_CARD["card_number"]


async def test_the_same_form_sent_twice_is_one_payment(clinic: Clinic) -> None:
    inv = await make_invoice(clinic, clinic.patient)
    browser = clinic.browsers["patient"]
    page = await browser.get(f"/portal/bills/{inv['id']}")
    fields = {**form_fields(page.text), "amount": "25.00", **GOOD_CARD}
    first = await browser.post(f"/portal/bills/{inv['id']}/pay", data=fields)
    assert first.status_code == 303
    # Sent again as if it had raced the first past the version check (same one-time key, same amount).
    again = await browser.post(f"/portal/bills/{inv['id']}/pay", data={**fields, "version": "2"})
    assert again.status_code == 303 and again.headers["location"] == first.headers["location"]
    assert len(await notices(clinic, inv["id"])) == 1
    charges = [
        e for e in clinic.env.app.state.payments.ledger.values() if e.reference == f"Invoice/{inv['id']}"
    ]
    assert len(charges) == 1 and charges[0].voided is None
    # Another amount from the same form is a payment of its own.
    third = await browser.post(
        f"/portal/bills/{inv['id']}/pay", data={**fields, "version": "2", "amount": "5"}
    )
    assert third.status_code == 303 and third.headers["location"] != first.headers["location"]
    page = text_of((await browser.get(f"/portal/bills/{inv['id']}")).text)
    assert "Paid $30.00" in page and "Balance due $120.00" in page


async def test_a_proxy_pays_the_bill_of_the_patient_they_act_for(clinic: Clinic) -> None:
    from housecall.identity import service

    env = clinic.env
    inv = await make_invoice(clinic, clinic.patient)
    theirs = await make_invoice(clinic, clinic.other_patient, number="ST-2002")
    proxy = await env.account("proxy")
    async with env.db.transaction() as conn:
        await service.grant_proxy(
            conn,
            proxy.id,
            clinic.patient,
            granted_by="system:test",
            relationship="parent",
            settings=env.settings,
        )
    browser = env.client()
    await env.signin(browser, proxy.email, next="/portal")
    clinic.browsers["proxy"] = browser
    r = await clinic.form_post(
        "proxy",
        "/account/acting-for",
        {"patient": clinic.patient, "next": "/portal"},
        form_from="/portal/choose",
    )
    assert r.status_code == 303
    assert "Balance due: $150.00" in text_of((await browser.get("/portal")).text)
    r = await pay(clinic, inv["id"], {"amount": "150.00", **GOOD_CARD}, who="proxy")
    assert r.status_code == 303 and (await clinic.read("Invoice", inv["id"]))["status"] == "balanced"
    assert (await browser.get(f"/portal/bills/{theirs['id']}")).status_code == 404
