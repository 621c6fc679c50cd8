"""SMART scopes (SECURITY.md row 17): every scope form by level by resource type by interaction,
checked against an independent expectation written from the spec's words, plus readable cases."""

from __future__ import annotations

import itertools

import pytest

from housecall.smart import scopes as sc

LEVELS = ["patient", "user", "system"]
TYPES = ["Observation", "Patient", "MedicationRequest"]
INTERACTIONS = list("cruds")


def _all_permission_strings() -> list[str]:
    ordered = ["".join(c) for n in range(0, 6) for c in itertools.combinations("cruds", n)]
    shuffled = ["sr", "rc", "dc", "sdurc", "rr", "crudss", "x", "R", "rs ", "READ"]
    return ordered + shuffled + ["read", "write", "*"]


def scope_strings() -> list[str]:
    out = []
    for level in [*LEVELS, "Patient", "practitioner", ""]:
        for res_type in [*TYPES, "*", "observation", "Obs-ervation", ""]:
            for perm in _all_permission_strings():
                out.append(f"{level}/{res_type}.{perm}")
    out += [
        "patient/Observation.rs?category=laboratory", "user/*.cruds?_tag=x", "patient/Observation.read?x=1",
        "openid", "fhirUser", "launch/patient", "offline_access", "patient/Observation", "Observation.rs",
        "patient/*", "*.*", "patient/*.*", "system/*.*", " patient/Observation.r", "patient//Observation.r",
    ]  # fmt: skip
    return out


def expected(scope: str, level: str, res_type: str, interaction: str) -> bool:
    """Written from the spec's text, without the implementation's regular expression."""
    if "?" in scope or scope != scope.strip() or scope.count("/") != 1:
        return False  # narrowed scopes grant nothing until the server filters by them
    scope_level, rest = scope.split("/")
    if scope_level not in ("patient", "user", "system") or scope_level != level:
        return False
    if "." not in rest:
        return False
    scope_type, perm = rest.split(".", 1)
    if scope_type != "*" and not (scope_type[:1].isupper() and scope_type.isalpha()):
        return False
    if scope_type not in ("*", res_type):
        return False
    v1 = {"read": {"r", "s"}, "write": {"c", "u", "d"}, "*": set("cruds")}
    if perm in v1:
        return interaction in v1[perm]
    if not perm or len(set(perm)) != len(perm) or any(ch not in "cruds" for ch in perm):
        return False
    if list(perm) != sorted(perm, key="cruds".index):
        return False
    return interaction in perm


def test_permits_matches_the_spec_for_every_combination() -> None:
    cases = mismatches = 0
    wrong = []
    for scope in scope_strings():
        for level, res_type, interaction in itertools.product(LEVELS, TYPES, INTERACTIONS):
            cases += 1
            got = sc.permits(frozenset({scope}), level, res_type, interaction)
            if got != expected(scope, level, res_type, interaction):
                mismatches += 1
                wrong.append((scope, level, res_type, interaction, got))
    print(f"scope table: {cases} cases, {mismatches} mismatches")
    assert cases > 25_000
    assert wrong == []


@pytest.mark.parametrize(
    ("granted", "level", "res_type", "interaction", "allowed"),
    [
        ({"patient/Observation.rs"}, "patient", "Observation", "r", True),
        ({"patient/Observation.rs"}, "patient", "Observation", "s", True),
        ({"patient/Observation.rs"}, "patient", "Observation", "c", False),
        ({"patient/Observation.rs"}, "patient", "Patient", "r", False),
        ({"patient/Observation.rs"}, "user", "Observation", "r", False),
        ({"user/*.cruds"}, "user", "Appointment", "d", True),
        ({"user/*.cruds"}, "patient", "Appointment", "r", False),
        ({"system/Patient.r"}, "system", "Patient", "r", True),
        ({"system/Patient.r"}, "system", "Patient", "s", False),
        ({"patient/*.read"}, "patient", "Condition", "s", True),
        ({"patient/*.read"}, "patient", "Condition", "u", False),
        ({"patient/*.write"}, "patient", "Condition", "u", True),
        ({"patient/*.write"}, "patient", "Condition", "r", False),
        ({"patient/*.*"}, "patient", "Condition", "d", True),
        ({"openid", "fhirUser", "launch/patient", "offline_access"}, "patient", "Patient", "r", False),
        ({"patient/Observation.sr"}, "patient", "Observation", "r", False),
        ({"patient/Observation.rs?category=laboratory"}, "patient", "Observation", "r", False),
        ({"patient/Observation.r", "patient/Observation.s"}, "patient", "Observation", "s", True),
        (set(), "patient", "Observation", "r", False),
        ({"patient/Observation.rs"}, "patient", "Observation", "rs", False),  # one interaction at a time
        ({"patient/Observation.rs"}, "patient", "Observation", "", False),
        ({"patient/Observation.rs"}, "admin", "Observation", "r", False),
    ],
)
def test_readable_cases(
    granted: set[str], level: str, res_type: str, interaction: str, allowed: bool
) -> None:
    assert sc.permits(frozenset(granted), level, res_type, interaction) is allowed


def test_no_scopes_at_all_permit_nothing() -> None:
    assert sc.permits(None, "patient", "Observation", "r") is False


@pytest.mark.parametrize(
    ("scope", "v2"),
    [("patient/*.read", "patient/*.rs"), ("user/Observation.write", "user/Observation.cud"),
     ("system/*.*", "system/*.cruds"), ("patient/Observation.rs", "patient/Observation.rs")],
)  # fmt: skip
def test_v1_scopes_map_to_v2(scope: str, v2: str) -> None:
    parsed = sc.parse_scope(scope)
    assert parsed is not None and parsed.v2() == v2


@pytest.mark.parametrize(
    ("requested", "registered", "ok"),
    [
        ("patient/Observation.rs", ["patient/*.rs"], True),
        ("patient/Observation.r", ["patient/*.rs"], True),
        ("patient/Observation.rs", ["patient/Observation.r"], False),
        ("patient/Observation.c", ["patient/*.read"], False),
        ("user/Observation.r", ["patient/*.cruds"], False),
        ("openid", ["openid", "fhirUser"], True),
        ("offline_access", ["openid"], False),
        ("patient/Observation.rs?category=x", ["patient/*.rs"], True),
        ("patient/Observation.rs", ["patient/Observation.rs?category=x"], False),
    ],
)
def test_a_client_is_granted_only_what_it_registered(requested: str, registered: list[str], ok: bool) -> None:
    assert sc.within(requested, registered) is ok


def test_plain_words_for_the_consent_page() -> None:
    assert (
        sc.describe("patient/Observation.rs")
        == "Read and search observation records in this patient's record"
    )
    assert sc.describe("patient/MedicationRequest.cruds").startswith(
        "Add, read, change, delete and search medication request"
    )
    assert "revoke" in sc.describe("offline_access")
