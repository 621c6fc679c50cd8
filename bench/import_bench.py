#!/usr/bin/env python3
"""``housecall import`` of the 30 Synthea transaction Bundles (9,692 resources, full validation and
indexing), with and without worker processes, on fresh databases of each engine.

Two figures per run, each on a database of its own:
- *CLI*: the wall time of ``python -m housecall.cli import <files>``, process start included (what
  ``fhir_bench.import_rate`` measures);
- *load*: ``loader.import_paths`` alone, in this process, after the files were checked
  (``count_all``) and the database connected - the load without the interpreter's start.

With ``--baseline DIR`` (a ``src`` folder of another tree, e.g. ``git archive <commit> src``), the
CLI of that tree runs first on each engine, in the same run (CLI figure only).

    PYTHONPATH=src .venv/bin/python bench/import_bench.py [--engines postgresql,sqlite] [--workers 0,2]
        [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.fhir_bench import SHARED, drop_db, new_db  # noqa: E402
from housecall.core import migrate  # noqa: E402
from housecall.core.db import open_database  # noqa: E402
from housecall.core.runtime import tune_gc  # noqa: E402
from housecall.core.settings import Settings  # noqa: E402
from housecall.fhir import loader  # noqa: E402
from housecall.fhir.store import now_us  # noqa: E402

FILES = sorted((SHARED / "fixtures" / "synthea").glob("*.json"))


def cli_seconds(url: str, workers: int | None, src: Path = ROOT / "src") -> tuple[float, str]:
    env = {**os.environ, "HOUSECALL_DATABASE_URL": url, "PYTHONPATH": str(src)}
    options = [] if workers is None else ["--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "housecall.cli", "import", *options, *map(str, FILES)],
        env=env, check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return time.perf_counter() - t0, " ".join(proc.stdout.split())


async def _load(url: str, pool: loader.Preparers | None) -> float:
    db = open_database(url)
    await db.connect()
    try:
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO organization (id, name, fhir_id, created) VALUES ($1, $2, NULL, $3)",
                "default", "Default organization", now_us(),
            )  # fmt: skip
        t0 = time.perf_counter()
        await loader.import_paths(db, Settings(database_url=url), "default", FILES, None, pool)
        return time.perf_counter() - t0
    finally:
        await db.close()


def load_seconds(url: str, workers: int) -> float:
    with loader.preparers(workers) as pool:
        loader.count_all(FILES, pool)
        return asyncio.run(_load(url, pool))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", default="postgresql,sqlite")
    ap.add_argument("--workers", default=f"0,{loader.default_workers()}")
    ap.add_argument("--baseline", type=Path, help="src folder of the tree to compare with (CLI only)")
    args = ap.parse_args()
    tune_gc()  # as `housecall import` does, before the workers fork
    entries = loader.count_all(FILES)
    print(f"{len(FILES)} files, {entries} entries; load average {os.getloadavg()[0]:.2f} at start")
    print("| engine | workers | CLI s (with process start) | CLI resources/s | load s | load resources/s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmpdir:
        for engine in args.engines.split(","):
            if args.baseline:
                url = new_db(engine, Path(tmpdir))
                try:
                    migrate.upgrade(url)
                    cli, summary = cli_seconds(url, None, args.baseline.resolve())
                    assert f"{entries} entries" in summary, summary
                finally:
                    drop_db(url)
                print(f"| {engine} | baseline | {cli:.2f} | {entries / cli:,.0f} | - | - |")
            for workers in map(int, args.workers.split(",")):
                url = new_db(engine, Path(tmpdir))
                try:
                    migrate.upgrade(url)
                    cli, summary = cli_seconds(url, workers)
                    assert f"{entries} entries" in summary, summary
                finally:
                    drop_db(url)
                url = new_db(engine, Path(tmpdir))
                try:
                    migrate.upgrade(url)
                    load = load_seconds(url, workers)
                finally:
                    drop_db(url)
                print(
                    f"| {engine} | {workers} | {cli:.2f} | {entries / cli:,.0f} | {load:.2f} | {entries / load:,.0f} |"
                )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
