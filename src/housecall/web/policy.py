"""Every route's access policy, in one table the tests hold the application to.

A route the table does not name fails ``tests/access/test_route_policies.py``, so a new page or API
route has to say who may use it. The policy is what the route's own code enforces (a comment at each
route says the same); the tests then sweep each policy with the wrong credentials: none at all, a
patient's session against staff routes, and so on.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Any


class Policy(StrEnum):
    PUBLIC = "public"  # no data: sign-in forms, discovery documents, static assets, liveness
    FHIR = "fhir"  # bearer token (or a page session for reads); the access path decides per resource
    OAUTH_CLIENT = "oauth-client"  # OAuth client authentication (the token, revoke, introspect endpoints)
    SIGN_IN_STEP = "sign-in-step"  # a half-finished sign-in (second factor, enrolment, e-mailed links)
    VISIT_GUEST = "visit-guest"  # the browser a visit's guest link was bound to (its cookie), that visit only
    SIGNED_IN = "signed-in"  # any fully signed-in person, acting on their own account
    PORTAL = "portal"  # patients and proxies, about the patient chosen in their session
    CLINICAL = "clinical"  # clinicians and nurses
    ORG_ADMIN = "org-admin"  # organization administrators
    FRONT_DESK = "front-desk"  # front desk staff and organization administrators (calendars, bookings)


ROUTES: dict[str, Policy] = {
    "/": Policy.PUBLIC,
    "/healthz": Policy.PUBLIC,
    "/openapi.json": Policy.PUBLIC,
    "/static": Policy.PUBLIC,
    "/.well-known/smart-configuration": Policy.PUBLIC,
    "/fhir/.well-known/smart-configuration": Policy.PUBLIC,
    "/fhir/.well-known/openid-configuration": Policy.PUBLIC,
    "/oauth/jwks": Policy.PUBLIC,
    "/signin": Policy.PUBLIC,
    "/password/forgot": Policy.PUBLIC,
    "/password/reset": Policy.SIGN_IN_STEP,
    "/verify": Policy.SIGN_IN_STEP,
    "/signin/mfa": Policy.SIGN_IN_STEP,
    "/mfa/enrol": Policy.SIGN_IN_STEP,
    "/signout": Policy.SIGN_IN_STEP,
    "/fhir": Policy.FHIR,
    "/fhir/{path:path}": Policy.FHIR,
    "/oauth/token": Policy.OAUTH_CLIENT,
    "/oauth/revoke": Policy.OAUTH_CLIENT,
    "/oauth/introspect": Policy.OAUTH_CLIENT,
    "/oauth/authorize": Policy.SIGNED_IN,
    "/signin/confirm": Policy.SIGNED_IN,
    "/signout/everywhere": Policy.SIGNED_IN,
    "/account": Policy.SIGNED_IN,
    "/account/password": Policy.SIGNED_IN,
    "/account/verify-email": Policy.SIGNED_IN,
    "/account/acting-for": Policy.SIGNED_IN,
    "/account/apps": Policy.SIGNED_IN,
    "/account/record-access": Policy.SIGNED_IN,
    "/language": Policy.PUBLIC,
    "/portal": Policy.PORTAL,
    "/portal/choose": Policy.SIGNED_IN,
    "/workspace": Policy.CLINICAL,
    "/workspace/tasks/{task_id}/{action}": Policy.CLINICAL,
    "/account/notifications": Policy.SIGNED_IN,
    "/break-glass": Policy.CLINICAL,
    "/break-glass/{opening_id}": Policy.CLINICAL,
    "/break-glass/{opening_id}/end": Policy.CLINICAL,
    "/admin/accounts": Policy.ORG_ADMIN,
    "/admin/accounts/{account_id}/{action}": Policy.ORG_ADMIN,
    "/admin/apps": Policy.ORG_ADMIN,
    "/admin/apps/{client_id}/disable": Policy.ORG_ADMIN,
    "/admin/outbox": Policy.FRONT_DESK,
    # Scheduling (decision 0014): the patient's appointments, the clinician's schedule, the front desk.
    "/portal/appointments": Policy.PORTAL,
    "/portal/appointments/book": Policy.PORTAL,
    "/portal/appointments/{appointment_id}": Policy.PORTAL,
    "/portal/appointments/{appointment_id}/reschedule": Policy.PORTAL,
    "/portal/appointments/{appointment_id}/cancel": Policy.PORTAL,
    "/portal/appointments/{appointment_id}/calendar.ics": Policy.PORTAL,
    "/workspace/schedule": Policy.CLINICAL,
    "/desk/schedule": Policy.FRONT_DESK,
    "/desk/schedule/availability": Policy.FRONT_DESK,
    "/desk/slots/{slot_id}/{action}": Policy.FRONT_DESK,
    "/desk/book": Policy.FRONT_DESK,
    "/desk/appointments/{appointment_id}/cancel": Policy.FRONT_DESK,
    # Secure messaging (messaging/views.py): the patient's conversations, the care team's replies.
    "/portal/messages": Policy.PORTAL,
    "/portal/messages/{thread_id}": Policy.PORTAL,
    "/portal/messages/{thread_id}/attachments/{message_id}": Policy.PORTAL,
    "/workspace/messages/{thread_id}": Policy.CLINICAL,
    "/workspace/messages/{thread_id}/done": Policy.CLINICAL,
    "/workspace/messages/{thread_id}/attachments/{message_id}": Policy.CLINICAL,
    # Bills and records (issue 4): statements and card payments, the record summary, visit
    # documents as PDF, the clinician's patient list and chart.
    "/portal/bills": Policy.PORTAL,
    "/portal/bills/{invoice_id}": Policy.PORTAL,
    "/portal/bills/{invoice_id}/pay": Policy.PORTAL,
    "/portal/bills/receipts/{receipt_id}": Policy.PORTAL,
    "/portal/bills/receipts/{receipt_id}.pdf": Policy.PORTAL,
    "/portal/record": Policy.PORTAL,
    "/portal/documents": Policy.PORTAL,
    "/portal/documents/{doc_id}": Policy.PORTAL,
    "/portal/documents/{doc_id}.pdf": Policy.PORTAL,
    "/workspace/patients": Policy.CLINICAL,
    "/workspace/patients/{patient_id}": Policy.CLINICAL,
    "/workspace/patients/{patient_id}/documents/{doc_id}": Policy.CLINICAL,
    "/workspace/patients/{patient_id}/documents/{doc_id}.pdf": Policy.CLINICAL,
    # Prescription refills and test results (docs/decisions/0013)
    "/portal/medications": Policy.PORTAL,
    "/portal/medications/refill": Policy.PORTAL,
    "/portal/results": Policy.PORTAL,
    "/portal/results/trend/{code}": Policy.PORTAL,
    "/portal/results/{report_id}": Policy.PORTAL,
    "/workspace/refills/{task_id}": Policy.CLINICAL,
    "/workspace/refills/{task_id}/approve": Policy.CLINICAL,
    "/workspace/refills/{task_id}/deny": Policy.CLINICAL,
    "/workspace/results/{report_id}": Policy.CLINICAL,
    "/workspace/results/{report_id}/release": Policy.CLINICAL,
    # Virtual visits (decision 0018): the visit page and its WebSocket check the person's role in
    # the visit (patient or proxy, a clinician of the Appointment, care team); guests come by link.
    "/visits/check": Policy.SIGNED_IN,
    "/visits/check/offer": Policy.SIGNED_IN,
    "/visits/check/result": Policy.SIGNED_IN,
    "/workspace/visits": Policy.CLINICAL,
    "/visits/{appointment_id}": Policy.SIGNED_IN,
    "/visits/{appointment_id}/checkin": Policy.PORTAL,
    "/visits/{appointment_id}/phone": Policy.SIGNED_IN,
    "/visits/{appointment_id}/notice": Policy.CLINICAL,
    "/visits/{appointment_id}/guests": Policy.CLINICAL,
    "/visits/{appointment_id}/signal": Policy.SIGNED_IN,
    "/visits/{appointment_id}/files": Policy.SIGNED_IN,
    "/visits/{appointment_id}/files/{message_id}": Policy.SIGNED_IN,
    # Links into a visit (decision 0021): a patient's single-use join link, a guest's link and page.
    "/join/{token}": Policy.SIGN_IN_STEP,
    "/visits/{appointment_id}/join-link": Policy.CLINICAL,
    "/guest/{token}": Policy.SIGN_IN_STEP,
    "/visits/{appointment_id}/guest": Policy.VISIT_GUEST,
    # After the visit (decision 0019): the visit's clinicians write the note and summary; the patient
    # or proxy reads the summary, books the follow-up and rates the visit; the care team sees the list.
    "/workspace/visits/ended": Policy.CLINICAL,
    "/visits/{appointment_id}/after": Policy.SIGNED_IN,
    "/visits/{appointment_id}/note": Policy.CLINICAL,
    "/visits/{appointment_id}/summary": Policy.CLINICAL,
    "/visits/{appointment_id}/follow-up": Policy.CLINICAL,
    "/visits/{appointment_id}/feedback": Policy.PORTAL,
    # Before the visit (decision 0020): forms sent ahead, the answers for the care team, join help.
    "/portal/appointments/{appointment_id}/forms": Policy.PORTAL,
    "/portal/appointments/{appointment_id}/forms/{form}": Policy.PORTAL,
    "/visits/{appointment_id}/intake": Policy.SIGNED_IN,
    "/help/visits": Policy.PUBLIC,
}


def app_routes(app: Any) -> Iterator[tuple[str, frozenset[str]]]:
    """(path, methods) of every route of the application, those of included routers too."""

    def walk(items: list[Any], prefix: str = "") -> Iterator[tuple[str, frozenset[str]]]:
        for route in items:
            original = getattr(route, "original_router", None)
            if original is not None:  # FastAPI's lazily included router
                context = getattr(route, "include_context", None)
                yield from walk(original.routes, prefix + (getattr(context, "prefix", "") or ""))
                continue
            yield prefix + getattr(route, "path", ""), frozenset(getattr(route, "methods", None) or ())

    yield from walk(app.router.routes)
