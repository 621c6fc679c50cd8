"""The navigation every page shows, by who is signed in: the portal's for patients and proxies,
the workspace's for staff. A feature adds its entry here (path, label, who sees it)."""

from __future__ import annotations

from dataclasses import dataclass

from housecall.access.actor import ActorKind, Role
from housecall.web.i18n import Msg, _

PORTAL = (ActorKind.PATIENT, ActorKind.PROXY)
STAFF = (ActorKind.PRACTITIONER, ActorKind.STAFF)
CARE = frozenset({Role.CLINICIAN, Role.NURSE, Role.RPM_NURSE, Role.INTERPRETER})
DESK = frozenset({Role.FRONT_DESK, Role.ORG_ADMIN})


@dataclass(frozen=True)
class Item:
    path: str
    label: str  # English source text, marked Msg("…"); translated when shown
    kinds: tuple[ActorKind, ...]
    roles: frozenset[Role] | None = None  # None: every role of those kinds


ITEMS: list[Item] = [
    # The patient portal (patients and proxies)
    Item("/portal", Msg("Home"), PORTAL),
    Item("/portal/messages", Msg("Messages"), PORTAL),
    Item("/portal/appointments", Msg("Appointments"), PORTAL),
    Item("/portal/results", Msg("Test results"), PORTAL),
    Item("/portal/medications", Msg("Medicines"), PORTAL),
    Item("/portal/documents", Msg("Visit summaries"), PORTAL),
    Item("/portal/bills", Msg("Bills"), PORTAL),
    Item("/portal/record", Msg("My record"), PORTAL),
    Item("/visits/check", Msg("Technology check"), PORTAL),
    # The care team's workspace
    Item("/workspace", Msg("Inbox"), STAFF, CARE),
    Item("/workspace?kind=message", Msg("Patient messages"), STAFF, CARE),
    Item("/workspace/patients", Msg("Patients"), STAFF, CARE),
    Item("/workspace/schedule", Msg("My schedule"), STAFF, CARE),
    Item("/workspace/visits", Msg("Waiting room"), STAFF, CARE),
    # The front desk
    Item("/desk/schedule", Msg("Schedules"), (ActorKind.STAFF,), DESK),
]


@dataclass(frozen=True)
class Link:
    path: str
    label: str
    current: bool


def links_for(account: object | None, path: str) -> list[Link]:
    """The entries ``account`` may use, the one under ``path`` marked current."""
    if account is None:
        return []
    kind = getattr(account, "kind", None)
    roles: frozenset[Role] = getattr(account, "roles", frozenset())
    out = []
    for item in ITEMS:
        if kind not in item.kinds:
            continue
        if item.roles is not None and kind is not ActorKind.PRACTITIONER and not roles & item.roles:
            continue
        here = path == item.path or (
            item.path not in ("/portal", "/workspace") and path.startswith(item.path + "/")
        )
        out.append(Link(item.path, _(item.label), here))
    return out


def home_for(account: object | None) -> str:
    """Where a signed-in person starts: the portal, the workspace, or their account page."""
    kind = getattr(account, "kind", None)
    if kind in PORTAL:
        return "/portal"
    if kind is ActorKind.PRACTITIONER or (
        kind is ActorKind.STAFF and getattr(account, "roles", frozenset()) & CARE
    ):
        return "/workspace"
    return "/account"
