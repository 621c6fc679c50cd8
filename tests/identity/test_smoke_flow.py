from __future__ import annotations

from tests.identity.conftest import PASSWORD, Env


async def test_patient_signs_in_and_sees_account(env: Env) -> None:
    c, account = await env.patient_session()
    page = await c.get("/account")
    assert page.status_code == 200
    assert account.email in page.text


async def test_staff_must_enrol(env: Env) -> None:
    c, _account, _secret = await env.staff_session()
    page = await c.get("/account")
    assert page.status_code == 200 and "Two-step sign-in" in page.text
    assert PASSWORD
