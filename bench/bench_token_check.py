"""The bearer-token check every FHIR request makes (``smart.tokens.actor_for_token``), per engine.

Measures, on a migrated database holding 10,000 live tokens:
- ``lookup_actor`` on a connection the request already holds (one primary-key probe + join);
- ``actor_for_token`` taking its own reader connection (what a caller without a connection pays);
- for comparison, verifying an RS256 JWT with a cached key (what a self-contained token would cost
  before its own revocation lookup).

Run: .venv/bin/python bench/bench_token_check.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.requests import Request

from housecall.core.db import open_database
from housecall.smart import tokens
from tests.support import drop_database, new_database

N = 5000
TOKENS = 10_000


class _State:
    pass


class _App:
    def __init__(self, db: object) -> None:
        self.state = _State()
        self.state.db = db  # type: ignore[attr-defined]


async def run(engine: str, workdir: Path) -> dict[str, float]:
    url = new_database(engine, workdir)
    db = open_database(url)
    await db.connect()
    try:
        now = tokens.now_us_clock()
        issued = []
        async with db.transaction() as conn:
            for i in range(TOKENS // 10):
                grant = tokens.Grant(
                    grant_id=tokens.new_id(), client_id="bench", org_id="org", account_id=f"a{i}", actor_kind="patient",
                    roles=(), fhir_user=f"Patient/p{i}", patient_id=f"p{i}", scopes=("patient/*.rs",), aud="http://x/fhir",
                )  # fmt: skip
                await tokens.create_grant(conn, grant, now)
                for _ in range(10):
                    issued.append((await tokens.issue_tokens(conn, grant, grant.scopes, now)).access_token)
        probe = issued[len(issued) // 2]
        out: dict[str, float] = {}
        async with db.reader() as conn:
            for _ in range(200):
                await tokens.lookup_actor(conn, probe, now)
            samples = []
            for _ in range(N):
                t0 = time.perf_counter()
                actor = await tokens.lookup_actor(conn, probe, now)
                samples.append(time.perf_counter() - t0)
            assert actor is not None
        out["held connection p50 µs"] = statistics.median(samples) * 1e6
        out["held connection p99 µs"] = sorted(samples)[int(N * 0.99)] * 1e6
        app = _App(db)
        scope = {"type": "http", "method": "GET", "path": "/fhir/Observation", "headers": [
            (b"authorization", f"Bearer {probe}".encode())], "app": app, "query_string": b""}  # fmt: skip
        samples = []
        for _ in range(N):
            t0 = time.perf_counter()
            await tokens.actor_for_token(Request(scope))
            samples.append(time.perf_counter() - t0)
        out["own reader p50 µs"] = statistics.median(samples) * 1e6
        out["own reader p99 µs"] = sorted(samples)[int(N * 0.99)] * 1e6
        return out
    finally:
        await db.close()
        drop_database(url)


def jwt_cost() -> float:
    key = RSAKey.generate_key(2048, private=True)
    public = RSAKey.import_key(key.as_dict(private=False))
    token = jwt.encode(
        {"alg": "RS256"}, {"sub": "x", "exp": int(time.time()) + 3600, "scope": "patient/*.rs"}, key
    )
    for _ in range(200):
        jwt.decode(token, public, algorithms=["RS256"])
    t0 = time.perf_counter()
    for _ in range(N):
        jwt.decode(token, public, algorithms=["RS256"])
    return (time.perf_counter() - t0) / N * 1e6


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ("sqlite", "postgresql"):
            figures = await run(engine, Path(tmp))
            print(engine, " · ".join(f"{k} {v:.0f}" for k, v in figures.items()))
    print(f"RS256 JWT verify with a cached key (no revocation check): {jwt_cost():.0f} µs")


if __name__ == "__main__":
    asyncio.run(main())
