#!/usr/bin/env python3
"""CPU per resource, by process, of one FHIR phase against two source trees, alternating.

This box's speed moves by a third within minutes (another tenant on the host), so throughput
alone hides changes of 5-10%. Each run starts one ``housecall serve`` of a tree on a fresh
PostgreSQL database (the same setup as ``fhir_side_by_side.py``: 10 Patients, 2,200
Observations), warms up for 2 s, then drives the phase from one client for ``--seconds`` and
reads the CPU time each process used from ``/proc``: the server, PostgreSQL (all its processes:
backends, WAL writer, checkpointer) and this client. Trees alternate, ``--runs`` each; the table
gives the median of each figure. 127.0.0.1 only; bounded.

    .venv/bin/python bench/fhir_cpu.py --before /tmp/before/src [--after src] \\
        [--phase transaction|batch|create|read|search] [--runs 3] [--seconds 8]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import fhir_side_by_side as side  # noqa: E402


def cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of the server, of PostgreSQL and of this process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"server": 0.0, "postgres": 0.0, "client": 0.0}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        if int(pid) == server_pid:
            out["server"] += used
        elif int(pid) == os.getpid():
            out["client"] += used
        elif name.startswith("postgres"):
            out["postgres"] += used
    return out


def one_run(src: str, phase: str, seconds: float) -> dict[str, float]:
    server = side.start("run", src)
    try:
        side.run(server, phase, 1, 2.0)  # warm-up
        assert server.live.proc is not None
        pid = server.live.proc.pid
        before, t0 = cpu_seconds(pid), time.monotonic()
        rate = side.run(server, phase, 1, seconds)
        after, wall = cpu_seconds(pid), time.monotonic() - t0
        items = rate * wall
        return {"rate": rate, **{k: 1e6 * (after[k] - before[k]) / items for k in after}}
    finally:
        side.stop(server)


def main() -> None:
    ap = side.tree_arguments(__doc__)
    ap.add_argument("--phase", default="transaction")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    trees = {"before": args.before, "after": args.after}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for n in range(args.runs):
        for name in trees if n % 2 == 0 else list(trees)[::-1]:
            results[name].append(one_run(trees[name], args.phase, args.seconds))
            r = results[name][-1]
            print(f"{name}: {r['rate']:,.0f}/s, CPU µs per item: server {r['server']:.0f}, "
                  f"PostgreSQL {r['postgres']:.0f}, client {r['client']:.0f}", flush=True)  # fmt: skip
    unit = "resources" if args.phase in ("transaction", "batch") else "requests"
    print(f"\n{args.phase}, median of {args.runs} runs of {args.seconds:g} s ({unit}/s; CPU µs per item)")
    print("| tree | rate | server CPU | PostgreSQL CPU | client CPU |\n|---|---|---|---|---|")
    for name in trees:
        med = {k: statistics.median(r[k] for r in results[name]) for k in results[name][0]}
        print(
            f"| {name} | {med['rate']:,.0f} | {med['server']:.0f} | {med['postgres']:.0f} | {med['client']:.0f} |"
        )


if __name__ == "__main__":
    main()
