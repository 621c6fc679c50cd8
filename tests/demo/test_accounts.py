"""The demo's sign-ins work the way a person would use them after ``make demo``: the demo patient
signs in and reads their own record through the FHIR API with the page session, and not another
patient's; the demo clinician sees their care team's patient."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from housecall.app import create_app
from housecall.core.db import open_database
from housecall.core.settings import Settings
from housecall.demo.accounts import DEMO_PASSWORD, DOMAIN, demo_people
from housecall.demo.generate import demo_bundle

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


async def _signed_in(app: object, email: str) -> httpx.AsyncClient:
    browser = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver")  # type: ignore[arg-type]
    page = await browser.get("/signin")
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    r = await browser.post("/signin", data={"email": email, "password": DEMO_PASSWORD, "csrf": token})
    assert r.status_code == 303, r.text[:300]
    return browser


@pytest.fixture
def demo_output(fresh_database_url: str) -> str:
    """``housecall demo --load-only`` on a fresh database, as ``make demo`` runs it; its output."""
    env = {"HOUSECALL_DATABASE_URL": fresh_database_url, "PATH": ""}
    done = subprocess.run([sys.executable, "-m", "housecall.cli", "demo", "--load-only"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return " ".join(done.stdout.split())


async def test_demo_patient_signs_in_and_reads_their_own_record(
    fresh_database_url: str, demo_output: str
) -> None:
    assert f"patient@{DOMAIN}" in demo_output and DEMO_PASSWORD in demo_output

    bundle = demo_bundle()
    me = next(links["patient_id"] for role, _, links in demo_people(bundle) if role == "patient")
    my_name = next(links["display_name"] for role, _, links in demo_people(bundle) if role == "patient")
    someone_else = next(
        e["resource"]["id"] for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Patient" and e["resource"]["id"] != me
    )  # fmt: skip
    app = create_app(Settings(database_url=fresh_database_url))
    db = open_database(fresh_database_url)
    await db.connect()
    app.state.db = db
    try:
        browser = await _signed_in(app, f"patient@{DOMAIN}")
        assert my_name in (await browser.get("/account")).text
        r = await browser.get(f"/fhir/Patient/{me}/$everything")
        assert r.status_code == 200
        assert len(r.json()["entry"]) > 10  # a history, not just the Patient
        assert (await browser.get(f"/fhir/Patient/{someone_else}")).status_code == 404
        r = await browser.get("/fhir/Condition?_total=accurate")
        assert r.json()["total"] > 0
        assert {e["resource"]["subject"]["reference"] for e in r.json()["entry"]} == {f"Patient/{me}"}
        # The portal's bills and records have the demo's statements, summaries and record.
        bills = await browser.get("/portal/bills")
        assert bills.status_code == 200 and "Balance due" in bills.text and "Statement ST-" in bills.text
        docs = await browser.get("/portal/documents")
        doc_id = re.search(r'href="/portal/documents/([^".]+)"', docs.text).group(1)  # type: ignore[union-attr]
        pdf = await browser.get(f"/portal/documents/{doc_id}.pdf")
        assert pdf.content.startswith(b"%PDF") and b"(Patient)" in pdf.content
        record = await browser.get("/portal/record")
        assert record.status_code == 200 and "No problems are recorded." not in record.text
        # Writes need a token, not a cookie.
        r = await browser.post("/fhir/Observation", json={"resourceType": "Observation"})
        assert r.status_code == 401
        await browser.aclose()
    finally:
        await db.close()
