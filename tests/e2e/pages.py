"""Every page of Housecall, by who opens it: the one list the browser checks walk
(``test_pages_in_browser.py``: accessibility with axe-core in English and Spanish, full-page
screenshots at a phone and a desktop size, page weight).

A feature that adds a page adds its path here, under each role that uses it. ``{name}`` in a path
is filled from the test world (``World.values`` in ``test_pages_in_browser.py``: ids and links that
exist only once the world is built); a page that needs something new in the world adds it there.
Each role is one signed-in browser: ``anonymous`` has no session, ``second-step`` is half-way
through sign-in (password given, code not yet), ``guest`` and ``new-guest`` hold a visit's guest
cookie and no session. A page answered with another status than 200 (the
pages that refuse someone) is written ``(path, status)``.

``FORMS`` names the pages whose first form (``main form[novalidate]``) is also sent empty, to
check the page that shows the errors.
"""

from __future__ import annotations

PAGES: dict[str, list[str | tuple[str, int]]] = {
    "anonymous": [
        "/signin",
        "/password/forgot",
        "/password/reset?token={reset_token}",
        "/verify?token={verify_token}",
        ("/password/reset?token=used-up", 400),
        ("/join/used-up", 404),
        ("/guest/used-up", 404),
        "/help/visits",
    ],
    # A visit's guests (no account: the cookie of a guest link they opened); "new-guest" has not
    # given a name yet.
    "guest": ["/visits/{visit}/guest", ("/visits/{other_visit}/guest", 404)],
    "new-guest": ["/visits/{visit}/guest"],
    "second-step": ["/signin/mfa"],
    "patient": [
        "/portal",
        "/portal/messages",
        "/portal/appointments",
        "/portal/appointments/book",
        "/portal/results",
        "/portal/medications",
        "/portal/documents",
        "/portal/bills",
        "/portal/record",
        "/account/notifications",
        "/visits/check",
        "/visits/{visit_written}/after",
        "/visits/{visit_ended}/after",
        "/visits/{visit_chat}",
        "/visits/{visit_phone}",
        "/portal/appointments/{visit_chat}",
        "/portal/appointments/{visit}/forms",
        "/portal/appointments/{visit}/forms/intake",
        "/portal/appointments/{visit}/forms/consent",
        "/help/visits",
        "/account",
        "/account/password",
        "/account/apps",
        "/account/record-access",
        "/mfa/enrol",
        "/signout",
        "{consent}",
        ("/workspace", 403),
        ("/admin/accounts", 404),
    ],
    "proxy": ["/portal", "/portal/choose", "/portal/messages", "/portal/results", "/account", "{consent}"],
    "clinician": [
        "/workspace",
        "/workspace/patients",
        "/workspace/schedule",
        "/workspace/schedule?view=week",
        "/workspace/visits",
        "/visits/{visit}",
        "/visits/{visit_chat}",
        "/visits/{visit_phone}",
        "/workspace/visits/ended",
        "/visits/{visit_ended}",
        "/visits/{visit_ended}/note",
        "/visits/{visit_ended}/summary",
        "/visits/{visit_written}/summary",
        "/visits/{visit_written}/after",
        "/visits/{visit}/intake",
        "/account",
        "/signin/confirm",
        "/break-glass",
        "/break-glass/{opening}",
        ("/portal", 403),
    ],
    "nurse": ["/workspace", "/workspace/patients", "/account"],
    "desk": ["/account", "/desk/schedule", "/admin/outbox", ("/workspace", 403)],
    "admin": ["/admin/accounts", "/admin/apps", "/admin/outbox", "/desk/schedule", "/account"],
}

FORMS: dict[str, list[str]] = {
    "anonymous": ["/signin", "/password/forgot"],
    "second-step": ["/signin/mfa"],
    "new-guest": ["/visits/{visit}/guest"],
    "patient": ["/visits/{visit_ended}/after", "/portal/appointments/{visit}/forms/intake"],
    "clinician": ["/break-glass", "/visits/{visit_ended}/note", "/visits/{visit_ended}/summary"],
    "admin": ["/admin/accounts"],
}
