#!/usr/bin/env python3
"""Benchmark ``housecall.fhir.indexing.extract_index`` (search-index extraction on write).

Measures the median time per call for:

1. a typical vital-signs Observation (the budget: about 30 µs per call),
2. a Synthea Patient,
3. every resource of one big Synthea patient bundle (the median time per bundle, and the
   mean time per resource).

Usage::

    .venv/bin/python bench/bench_indexing.py [--fixtures DIR] [--repeat N] [--bundle NAME]

The fixtures default to ``../shared/fixtures`` or ``$HOUSECALL_FIXTURES``. References in the
bundle are rewritten from ``urn:uuid:`` to ``Type/id`` first, as the store does before it calls
``extract_index``. That step is not timed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
try:
    from housecall.fhir.indexing import extract_index
except ModuleNotFoundError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))
    from housecall.fhir.indexing import extract_index

VITALS: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "x",
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
    "subject": {"reference": "Patient/abc"},
    "effectiveDateTime": "2024-05-01T09:00:00+00:00",
    "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
}


def resolved(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    ids = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: fix(v) for k, v in node.items()}
            if out.get("reference") in ids:
                out["reference"] = ids[out["reference"]]
            return out
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return [fix(e["resource"]) for e in bundle["entry"]]


def timed_us(fn: Callable[[], object], inner: int, repeat: int) -> tuple[float, float]:
    """(median, best) over ``repeat`` rounds of the mean µs per call of ``inner`` calls (GC off).

    The best round shows the cost on an idle core; the median what a busy machine gives.
    """
    samples = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.perf_counter_ns()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter_ns() - t0) / inner / 1000)
    finally:
        if gc_was:
            gc.enable()
    return statistics.median(samples), min(samples)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    default = os.environ.get("HOUSECALL_FIXTURES") or str(ROOT.parent / "shared" / "fixtures")
    ap.add_argument("--fixtures", type=Path, default=Path(default))
    ap.add_argument("--repeat", type=int, default=15, help="rounds per measurement (median is reported)")
    ap.add_argument(
        "--bundle",
        default="Evelyn_McCullough_b3e8d121-f742-438c-92e3-02135e4543d5.json",
        help="Synthea bundle file name (default: the one with the most Observations)",
    )
    args = ap.parse_args(argv)
    synthea = args.fixtures / "synthea"
    if not synthea.is_dir():
        print(f"missing fixtures: {synthea}", file=sys.stderr)
        return 2

    bundle = json.loads((synthea / args.bundle).read_text(encoding="utf-8"))
    resources = resolved(bundle)
    patient = next(r for r in resources if r["resourceType"] == "Patient")

    def whole_bundle() -> None:
        for r in resources:
            extract_index(r)

    for _ in range(2000):  # warm-up
        extract_index(VITALS)
    whole_bundle()

    obs_us, obs_best = timed_us(lambda: extract_index(VITALS), 20_000, args.repeat)
    pat_us, pat_best = timed_us(lambda: extract_index(patient), 5_000, args.repeat)
    bundle_us, bundle_best = timed_us(whole_bundle, 1, args.repeat)
    rows = sum(
        len(getattr(x, k))
        for x in map(extract_index, resources)
        for k in ("token", "string", "reference", "date", "quantity", "number", "uri")
    )
    n = len(resources)
    print(f"python {sys.version.split()[0]} on {sys.platform}; {args.repeat} rounds: median (best)")
    print(f"vital-signs Observation : {obs_us:8.2f} µs/call ({obs_best:.2f})")
    print(f"Synthea Patient         : {pat_us:8.2f} µs/call ({pat_best:.2f})")
    print(
        f"Synthea bundle, {n} resources: {bundle_us / 1000:.2f} ms/bundle ({bundle_best / 1000:.2f})"
        f" = {bundle_us / n:.2f} µs/resource ({bundle_best / n:.2f})"
    )
    print(f"  {args.bundle}: {rows} rows, {rows / n:.1f} rows/resource")
    return 0


if __name__ == "__main__":
    sys.exit(main())
