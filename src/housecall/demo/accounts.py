"""Sign-ins for the demo organization, so that ``make demo`` can be tried as each kind of user.

Created once (loading the demo again leaves them as they are), with one shared passphrase that is
printed by ``housecall demo`` - a local demonstration on 127.0.0.1, never a deployment. Staff enrol
their authenticator app at first sign-in, as everywhere.
"""

from __future__ import annotations

from typing import Any

from housecall.core.db import Conn
from housecall.core.settings import Settings
from housecall.identity import service

DEMO_PASSWORD = "housecall demo passphrase"  # noqa: S105 - printed for the local demo on purpose
DOMAIN = "demo.housecall.test"


def demo_people(bundle: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """(role, e-mail, links) for the demo: the first patient, the first clinician of that patient's
    care team, and one of each staff role."""
    resources = [e["resource"] for e in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    team = next(
        r for r in resources
        if r["resourceType"] == "CareTeam" and r.get("subject", {}).get("reference") == f"Patient/{patient['id']}"
    )  # fmt: skip
    clinician = next(
        p["member"]["reference"].split("/", 1)[1]
        for p in team["participant"]
        if p["member"]["reference"].startswith("Practitioner/")
    )
    practitioner = next(r for r in resources if r["resourceType"] == "Practitioner" and r["id"] == clinician)
    return [
        ("patient", f"patient@{DOMAIN}", {"patient_id": patient["id"], "display_name": _name(patient)}),
        (
            "clinician",
            f"clinician@{DOMAIN}",
            {"practitioner_id": clinician, "display_name": _name(practitioner)},
        ),
        ("front_desk", f"frontdesk@{DOMAIN}", {"display_name": "Front desk (demo)"}),
        ("org_admin", f"admin@{DOMAIN}", {"display_name": "Administrator (demo)"}),
        ("privacy_officer", f"privacy@{DOMAIN}", {"display_name": "Privacy officer (demo)"}),
    ]


def _name(resource: dict[str, Any]) -> str:
    name = (resource.get("name") or [{}])[0]
    return " ".join([*name.get("given", []), name.get("family", "")]).strip() or resource["id"]


async def ensure_demo_accounts(
    conn: Conn, org_id: str, bundle: dict[str, Any], settings: Settings
) -> list[str]:
    """Create the demo sign-ins that do not exist yet; returns every demo e-mail address."""
    out = []
    for role, email, links in demo_people(bundle):
        if await service.find_account_by_email(conn, email) is None:
            await service.create_account(
                conn, org_id, email, role, DEMO_PASSWORD, settings=settings, email_verified=True, **links
            )
        out.append(f"{email} ({role.replace('_', ' ')})")
    return out
