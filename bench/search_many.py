#!/usr/bin/env python3
"""Searches over one patient's many readings of one code, two source trees side by side.

Monitoring fills one patient's record with thousands of Observations of one code. Each tree gets
its own ``housecall serve`` on PostgreSQL (``fhir_side_by_side.start``); both are loaded with the
same transaction Bundles of readings for one patient, and at each size the same searches
(``subject`` + ``code`` in the default order and by ``_sort`` keys, and the clinician chart's
search of a patient's final results) are timed on both, request by request in alternating order,
as the median of ``--repeat`` requests each. 127.0.0.1 only; bounded.

    git worktree add --detach /tmp/before HEAD~1
    .venv/bin/python bench/search_many.py --before /tmp/before/src --after src [--matches 2000,20000]
"""

from __future__ import annotations

import statistics
import time
import urllib.parse
import uuid
from typing import Any

from fhir_side_by_side import LOINC, Server, start, stop, tree_arguments

CODE = "code=" + urllib.parse.quote(f"http://loinc.org|{LOINC[0]}")
CATEGORY = urllib.parse.quote("http://terminology.hl7.org/CodeSystem/observation-category|")
# ``{}`` stands for the patient's id. The last two are the clinician's chart of a patient's results,
# by category code alone and (as the chart asks since decision 0031's merged ranges) with the system.
QUERIES = (
    f"subject=Patient/{{}}&{CODE}",
    f"subject=Patient/{{}}&{CODE}&_sort=-date",
    f"subject=Patient/{{}}&{CODE}&status=final&_sort=-date",
    f"subject=Patient/{{}}&{CODE}&_sort=date",
    f"subject=Patient/{{}}&{CODE}&_sort=-_lastUpdated",
    "patient={}&category=laboratory,vital-signs&status=final,amended,corrected&_sort=-date",
    f"patient={{}}&category={CATEGORY}laboratory,{CATEGORY}vital-signs&status=final,amended,corrected&_sort=-date",
)


def reading(server: Server, i: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": LOINC[0]}]},
        "subject": {"reference": "Patient/" + server.patients[0]},
        "effectiveDateTime": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00+00:00",
        "valueQuantity": {"value": 60 + i % 40, "unit": "/min"},
    }  # fmt: skip


def fill(server: Server, matches: int) -> None:
    """Add readings of the first patient's first code until about ``matches`` of them are stored."""
    conn = server.connect()
    query = QUERIES[0].format(server.patients[0])
    have = server.request(conn, "GET", f"/fhir/Observation?{query}&_summary=count")["total"]
    while have < matches:
        entries = [
            {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": reading(server, have + j),
             "request": {"method": "POST", "url": "Observation"}}
            for j in range(min(100, matches - have))
        ]  # fmt: skip
        server.request(
            conn, "POST", "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        )
        have += len(entries)


def timed(servers: list[Server], query: str, repeat: int) -> dict[str, float]:
    """Median ms of ``query`` (``{}`` standing for the patient's id) on each server, alternating."""
    conns = {s.name: s.connect() for s in servers}
    paths = {s.name: "/fhir/Observation?" + query.format(s.patients[0]) for s in servers}
    times: dict[str, list[float]] = {s.name: [] for s in servers}
    for r in range(repeat + 1):
        for s in servers if r % 2 == 0 else servers[::-1]:
            t0 = time.perf_counter()
            s.request(conns[s.name], "GET", paths[s.name])
            if r:  # the first round warms each server up
                times[s.name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def main() -> None:
    ap = tree_arguments(__doc__)
    ap.add_argument("--matches", default="2000,20000", help="readings of the patient's code, in steps")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    servers = [start("before", args.before), start("after", args.after)]
    try:
        print("| matches | search | before ms | after ms | after/before |\n|---|---|---|---|---|")
        for matches in (int(m) for m in args.matches.split(",")):
            for server in servers:
                fill(server, matches)
            for query in QUERIES:
                ms = timed(servers, query, args.repeat)
                before, after = ms["before"], ms["after"]
                shown = urllib.parse.unquote(query.split("}&", 1)[1])
                print(f"| {matches:,} | `{shown}` | {before:.1f} | {after:.1f} | {after / before:.2f} |")
    finally:
        for server in servers:
            stop(server)


if __name__ == "__main__":
    main()
