"""Password rules (12-128 characters, breached list, no composition rules) and argon2id hashing."""

from __future__ import annotations

import pytest

from housecall.core.settings import Settings
from housecall.identity import passwords, service
from tests.identity.conftest import PASSWORD, Env


def test_the_shipped_list_has_the_30000_most_common_passwords() -> None:
    listed = passwords.breached_passwords()
    assert len(listed) >= 10_000
    assert {"password", "123456", "qwertyuiop", "iloveyou"} <= listed


def test_no_password_of_the_breached_list_is_accepted_in_any_case() -> None:
    listed = sorted(passwords.breached_passwords())
    variants = [w for word in listed for w in (word, word.upper(), word.title(), f" {word} ")]
    accepted = [w for w in variants if passwords.password_problem(w) is None]
    assert len(variants) >= 120_000
    assert accepted == []


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short", "at least 12"),
        ("elevenchars", "at least 12"),
        ("x" * 129, "at most 128"),
        ("baseball1234", None),  # not on the list, long enough: no composition rules
        ("1qaz2wsx3edc", "breaches"),
        ("1QAZ2WSX3EDC", "breaches"),  # case-folded before the comparison
        (
            "\uff31\uff37\uff25\uff32\uff34\uff39\uff35\uff29\uff2f\uff30\uff11\uff12",
            "breaches",
        ),  # full-width forms fold to ASCII (NFKC)
        ("Q1W2E3R4T5Y6", "breaches"),
        ("all lower case words only", None),
        ("ñandú ñandú ñandú", None),
    ],
)
def test_rules(password: str, problem: str | None) -> None:
    found = passwords.password_problem(password)
    if problem is None:
        assert found is None, found
    else:
        assert found is not None and problem in found


def test_email_is_not_a_password() -> None:
    assert passwords.password_problem("someone@example.org", "Someone@example.org") is not None


def test_production_cost_is_rfc9106_and_tests_lower_it_by_setting() -> None:
    default = Settings()
    assert (default.argon2_time_cost, default.argon2_memory_kib, default.argon2_parallelism) == (3, 65536, 4)


async def test_hash_is_argon2id_and_upgraded_at_sign_in_when_the_cost_changes(env: Env) -> None:
    account = await env.account("patient")
    async with env.db.reader() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM account WHERE id = $1", account.id)
    assert stored.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert PASSWORD not in stored
    stronger = env.settings.model_copy(update={"argon2_memory_kib": 2048, "argon2_time_cost": 2})
    async with env.db.transaction() as conn:
        assert await service.verify_password(conn, account.email, PASSWORD, settings=stronger) is not None
        upgraded = await conn.fetchval("SELECT password_hash FROM account WHERE id = $1", account.id)
        assert upgraded.startswith("$argon2id$v=19$m=2048,t=2,p=1$")
        assert (
            await service.verify_password(conn, account.email, "wrong password here", settings=stronger)
            is None
        )


async def test_accounts_refuse_weak_passwords(env: Env) -> None:
    with pytest.raises(service.IdentityError) as refused:
        await env.account("patient", password="password1234")
    assert refused.value.field == "password"
