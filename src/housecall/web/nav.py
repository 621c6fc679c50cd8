"""The navigation every page shows, by who is signed in: the portal's for patients and proxies,
the workspace's for staff. A feature adds its entry here (path, label, who sees it)."""

from __future__ import annotations

from dataclasses import dataclass

from housecall.access.actor import ActorKind, Role
from housecall.web.i18n import _

PORTAL = (ActorKind.PATIENT, ActorKind.PROXY)
STAFF = (ActorKind.PRACTITIONER, ActorKind.STAFF)
CARE = frozenset({Role.CLINICIAN, Role.NURSE, Role.RPM_NURSE, Role.INTERPRETER})
DESK = frozenset({Role.FRONT_DESK, Role.ORG_ADMIN})


@dataclass(frozen=True)
class Item:
    path: str
    label: str  # English source text; translated when shown
    kinds: tuple[ActorKind, ...]
    roles: frozenset[Role] | None = None  # None: every role of those kinds


ITEMS: list[Item] = [
    Item("/portal", "Home", PORTAL),
    Item("/workspace", "Inbox", STAFF, CARE),
    Item("/workspace/visits", "Waiting room", STAFF, CARE),
    Item("/visits/check", "Technology check", PORTAL),
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
