"""SMART scopes as pure functions: parse them, narrow them, and decide what they permit.

SMART App Launch v2, "Scopes and Launch Context"
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html):

- clinical scopes are ``<level>/<type>.<permissions>`` with level ``patient``, ``user`` or
  ``system``, type a resource type or ``*``, and permissions a subset of ``cruds`` written in that
  order (``rs``, ``cud``; ``sr`` is not a scope);
- the v1 forms ``.read``, ``.write`` and ``.*`` mean ``rs``, ``cud`` and ``cruds``;
- a v2 scope may narrow itself with a query (``patient/Observation.rs?category=laboratory``). This
  server does not filter by such queries yet, so a narrowed scope grants nothing (deny by default)
  rather than more than it says;
- everything else (``openid``, ``fhirUser``, ``launch/patient``, ``offline_access``) is a
  non-clinical scope and permits no interaction.

Anything malformed is ignored: it grants nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from housecall.web.i18n import Msg, _

LEVELS = ("patient", "user", "system")
INTERACTIONS = "cruds"  # create, read, update, delete, search - in the order the spec writes them
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
IDENTITY_SCOPES = frozenset({"openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access",
                             "online_access"})  # fmt: skip

_CLINICAL = re.compile(
    r"^(?P<level>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{1,63})\.(?P<perm>read|write|\*|c?r?u?d?s?)"
    r"(?:\?(?P<query>[^\s]+))?$"
)

# Words for the consent page: what each permission lets an app do.
PERMISSION_WORDS = {
    "c": Msg("add"),
    "r": Msg("read"),
    "u": Msg("change"),
    "d": Msg("delete"),
    "s": Msg("search"),
}


@dataclass(frozen=True, slots=True)
class ClinicalScope:
    level: str
    res_type: str  # a resource type or "*"
    permissions: frozenset[str]  # subset of "cruds"
    query: str | None = None  # v2 narrowing; see the module docstring

    def covers(self, other: ClinicalScope) -> bool:
        """True when everything ``other`` allows is allowed by this scope."""
        return (
            self.level == other.level
            and self.res_type in ("*", other.res_type)
            and other.permissions <= self.permissions
            and (self.query is None or self.query == other.query)
        )

    def v2(self) -> str:
        perms = "".join(p for p in INTERACTIONS if p in self.permissions)
        return f"{self.level}/{self.res_type}.{perms}" + (f"?{self.query}" if self.query else "")


@lru_cache(maxsize=4096)
def parse_scope(scope: str) -> ClinicalScope | None:
    """The clinical scope a string names, v1 forms mapped to v2; None for anything else."""
    m = _CLINICAL.match(scope)
    if m is None:
        return None
    perm = m["perm"]
    perms = V1_PERMISSIONS.get(perm, perm)
    if not perms:
        return None  # "patient/Observation." names no permission
    if perm in V1_PERMISSIONS and m["query"]:
        return None  # v1 scopes have no query form
    return ClinicalScope(m["level"], m["type"], frozenset(perms), m["query"])


def split(scope_param: str | None) -> list[str]:
    """The scope strings of an OAuth ``scope`` parameter, duplicates removed, order kept."""
    seen: dict[str, None] = {}
    for s in (scope_param or "").split():
        seen.setdefault(s, None)
    return list(seen)


def is_known(scope: str) -> bool:
    return scope in IDENTITY_SCOPES or parse_scope(scope) is not None


def permits(scopes: Iterable[str] | None, level: str, res_type: str, interaction: str) -> bool:
    """Whether ``scopes`` allow ``interaction`` (one of c r u d s) on ``res_type`` at ``level``.

    The caller maps the FHIR interaction: read/vread/history-instance -> r, search and type/system
    history -> s, create -> c, update/patch -> u, delete -> d; an operation maps to what it does
    (``$everything`` is r on each type it returns). ``level`` is the one the actor's token lives in:
    patient-context tokens are checked at ``patient`` (and the caller limits them to the patient's
    compartment), user tokens at ``user``, backend clients at ``system``.
    """
    if interaction not in INTERACTIONS or len(interaction) != 1 or level not in LEVELS or scopes is None:
        return False
    for s in scopes:
        parsed = parse_scope(s)
        if (
            parsed is not None
            and parsed.query is None
            and parsed.level == level
            and parsed.res_type in ("*", res_type)
            and interaction in parsed.permissions
        ):
            return True
    return False


def within(requested: str, allowed: Iterable[str]) -> bool:
    """Whether a client registered for ``allowed`` may be granted ``requested``."""
    allowed = list(allowed)
    if requested in allowed:
        return True
    wanted = parse_scope(requested)
    if wanted is None:
        return False
    return any(a is not None and a.covers(wanted) for a in map(parse_scope, allowed))


def levels(scopes: Iterable[str]) -> set[str]:
    return {p.level for p in map(parse_scope, scopes) if p is not None}


def describe(scope: str) -> str:
    """The scope in plain words, for the consent page, in the reader's language."""
    fixed = {
        "openid": Msg("Know who you are (your name and account)"),
        "fhirUser": Msg("Know who you are (your name and account)"),
        "profile": Msg("Know who you are (your name and account)"),
        "launch/patient": Msg("Know which patient's record you chose"),
        "launch": Msg("Know which patient's record you chose"),
        "offline_access": Msg("Keep access when you are not using it, until you revoke it"),
        "online_access": Msg("Keep access while you are signed in"),
    }
    if scope in fixed:
        return _(fixed[scope])
    parsed = parse_scope(scope)
    if parsed is None:
        return scope
    verbs = [_(PERMISSION_WORDS[p]) for p in INTERACTIONS if p in parsed.permissions]
    what = (
        _("all health records")
        if parsed.res_type == "*"
        else _("%(type)s records") % {"type": _spaced(parsed.res_type)}
    )
    whose = {
        "patient": Msg("in this patient's record"),
        "user": Msg("you can see"),
        "system": Msg("of the organization"),
    }
    text = _("%(verbs)s %(what)s %(whose)s") % {
        "verbs": _join(verbs),
        "what": what,
        "whose": _(whose[parsed.level]),
    }
    text = text[:1].upper() + text[1:]
    return text + (_(" (only %(query)s)") % {"query": parsed.query} if parsed.query else "")


def _spaced(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def _join(words: list[str]) -> str:
    if len(words) == 1:
        return words[0]
    return _("%(first)s and %(last)s") % {"first": ", ".join(words[:-1]), "last": words[-1]}
