"""Every page of Housecall, by who opens it: the one list the browser checks walk
(``test_pages_in_browser.py``: accessibility with axe-core in English and Spanish, full-page
screenshots at a phone and a desktop size, page weight).

A feature that adds a page adds its path here, under each role that uses it. ``{name}`` in a path
is filled from the test world (``World.values`` in ``test_pages_in_browser.py``: ids and links that
exist only once the world is built); a page that needs something new in the world adds it there.
Each role is one signed-in browser: ``anonymous`` has no session, ``second-step`` is half-way
through sign-in (password given, code not yet).
"""

from __future__ import annotations

PAGES: dict[str, list[str]] = {
    "anonymous": [
        "/signin",
        "/password/forgot",
        "/password/reset?token={reset_token}",
        "/verify?token={verify_token}",
    ],
    "second-step": ["/signin/mfa"],
    "patient": [
        "/portal",
        "/account",
        "/account/password",
        "/account/apps",
        "/account/record-access",
        "/mfa/enrol",
        "/signout",
        "{consent}",
    ],
    "proxy": ["/portal", "/portal/choose", "/account", "{consent}"],
    "clinician": ["/workspace", "/account", "/signin/confirm", "/break-glass", "/break-glass/{opening}"],
    "nurse": ["/workspace", "/account"],
    "desk": ["/account"],
    "admin": ["/admin/accounts", "/admin/apps", "/account"],
}
