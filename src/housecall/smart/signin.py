"""Who is signed in, for the authorization pages: the one place that depends on identity.

The authorization server never signs anyone in itself: it asks identity's session
(``identity.sessions.signed_in``) and sends the browser to identity's ``/signin?next=…`` page.
Proxies pick a patient among the grants identity records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request

from housecall.access.actor import ActorKind
from housecall.core.db import Conn


@dataclass(frozen=True)
class SignedInUser:
    account_id: str
    org_id: str
    kind: ActorKind
    roles: tuple[str, ...]
    display_name: str
    patient_id: str | None  # a patient account's own Patient
    fhir_user: str | None  # "Patient/…" or "Practitioner/…"; a proxy's comes with the chosen patient


@dataclass(frozen=True)
class PatientChoice:
    patient_id: str
    name: str
    related_person_id: str | None  # the proxy's RelatedPerson for this patient
    relationship: str


async def current_user(request: Request) -> SignedInUser | None:
    from housecall.identity.sessions import signed_in

    account = await signed_in(request)
    if account is None:
        return None
    return SignedInUser(
        account_id=account.id, org_id=account.org_id, kind=ActorKind(account.kind),
        roles=tuple(sorted(r.value for r in account.roles)), display_name=account.display_name,
        patient_id=account.patient_id, fhir_user=account.fhir_user,
    )  # fmt: skip


def signin_url(next_path: str) -> str:
    """identity's sign-in page, coming back to ``next_path`` (a relative path) afterwards."""
    return "/signin?next=" + quote(next_path, safe="")


async def proxy_choices(conn: Conn, user: SignedInUser) -> list[PatientChoice]:
    """The patients who granted this proxy access, active now, in this organization."""
    from housecall.identity.service import proxy_grants

    out = []
    for g in await proxy_grants(conn, user.account_id):
        if g.org_id != user.org_id:
            continue
        # The proxy may see the name of a patient who granted them access: that grant is what
        # this lookup is limited to.
        content = await conn.fetchval(
            "SELECT content FROM resource WHERE res_type = $1 AND res_id = $2 AND NOT deleted",
            "Patient",
            g.patient_id,
        )
        out.append(PatientChoice(g.patient_id, _name(content) or "(name not recorded)", g.related_person_id,
                                 g.relationship))  # fmt: skip
    return out


def _name(content: bytes | None) -> str | None:
    if not content:
        return None
    names = json.loads(content).get("name") or []
    if not names:
        return None
    n = names[0]
    return n.get("text") or " ".join([*n.get("given", []), n.get("family", "")]).strip() or None
