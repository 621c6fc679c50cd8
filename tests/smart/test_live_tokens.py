"""What a server process remembers of the tokens it has checked (decision 0027): on PostgreSQL a
token is looked up once and then trusted from memory, until anything that could end it changes -
in this process (forgotten at once) or in another one (forgotten when the change's notification
arrives). On SQLite every request looks its token up."""

from __future__ import annotations

import asyncio
import time

import psycopg

from tests.smart.conftest import Smart, exchange, get_code


async def _token(smart: Smart) -> tuple[str, dict]:
    client, _ = await smart.register()
    smart.sign_in()
    code, verifier, _ = await get_code(smart, client.client_id)
    answer = await exchange(smart, client.client_id, code, verifier)
    assert answer.status_code == 200, answer.text
    return client.client_id, answer.json()


async def _lookups(smart: Smart, access_token: str, times: int = 3) -> int:
    """Statements the database ran for ``times`` bearer checks of a token (all must pass)."""
    before = smart.db.counter.statements
    for _ in range(times):
        assert (await smart.whoami(access_token)).status_code == 200
    return smart.db.counter.statements - before


async def test_a_checked_token_is_looked_up_once_on_postgresql_and_every_time_on_sqlite(
    smart: Smart, engine: str
) -> None:
    _, body = await _token(smart)
    assert (await smart.whoami(body["access_token"])).status_code == 200
    assert await _lookups(smart, body["access_token"]) == (0 if engine == "postgresql" else 3)


async def test_a_revocation_committed_by_another_process_ends_the_token_within_a_moment(
    smart: Smart, engine: str, database_url: str
) -> None:
    _, body = await _token(smart)
    assert await _lookups(smart, body["access_token"], 2) >= 0  # checked, and on PostgreSQL remembered
    # Another process (here a plain connection) revokes every grant of the account.
    sql = "UPDATE oauth_grant SET revoked_at = %s WHERE account_id = %s"
    if engine == "postgresql":
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute(sql, (int(time.time() * 1e6), smart.user.account_id))
    else:
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as other:
            other.execute(sql.replace("%s", "?"), (int(time.time() * 1e6), smart.user.account_id))
    deadline = time.monotonic() + 2.0
    while (await smart.whoami(body["access_token"])).status_code == 200:
        assert time.monotonic() < deadline, "a token revoked elsewhere still worked after 2 s"
        await asyncio.sleep(0.005)
    for _ in range(5):  # and it stays refused: nothing of it is remembered
        assert (await smart.whoami(body["access_token"])).status_code == 401


async def test_while_nobody_listens_nothing_is_remembered(
    smart: Smart, engine: str, database_url: str
) -> None:
    live = smart.app.state.live_tokens
    if engine != "postgresql":
        assert live is None  # SQLite: nothing to listen to, every token is looked up
        return
    _, body = await _token(smart)
    await _lookups(smart, body["access_token"], 1)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN%%'"
        )
    deadline = time.monotonic() + 15
    while live.listening:
        assert time.monotonic() < deadline, "a lost listening connection went unnoticed"
        await asyncio.sleep(0.05)
    assert await _lookups(smart, body["access_token"]) == 3
    while not live.listening:  # it listens again by itself, and then remembers again
        assert time.monotonic() < deadline + 15, "listening never resumed"
        await asyncio.sleep(0.05)
    assert (await smart.whoami(body["access_token"])).status_code == 200
    assert await _lookups(smart, body["access_token"]) == 0
