"""Signaling capacity: waiting-room connections one `housecall serve` process holds with live
position updates, and the relay latency of a signaling message at that load.

Set-up (straight into a fresh database, SQLite by default): clinicians licensed in Vermont, each
with PER_CLINICIAN patients checked in for a video visit today (signed-in sessions written as a
completed sign-in leaves them). Then `housecall serve` on 127.0.0.1 (one process) and two client
processes (the machine's two cores are shared by server and clients; the figures say so):

- the **holder** opens waiting-room sockets (``/visits/{id}/signal``, each patient's own cookie) up
  to N, 20 handshakes at a time, and keeps reading them; it counts the ``waiting`` (position)
  messages they receive and the sockets that close;
- the **probe**, in this process, holds PAIRS admitted pairs (a clinician and her patient in an
  in-progress visit, in the rooms of the loaded clinicians) and sends ``candidate`` messages from
  clinician to patient at RATE per second per pair, each carrying its send time: the **relay
  latency** is send to receive on one clock. Meanwhile it makes the queues move: every CHURN
  seconds one extra waiting patient of one of those clinicians leaves (the socket closes) and
  comes back, which makes the server push new positions to everyone waiting for her; a watcher
  patient in the same line times **position update latency**, from the leave to its new place.

For each N of ``--connections`` (cumulative: 500, then 1,000 more sockets, …), measured SETTLE s
after the ramp for MEASURE s: ramp time, sockets held at the end, relay p50/p95/p99/max,
position-update p50/p99, position messages per second, and the server's CPU share and memory.
Issue 5's floor: 2,000 connections, p99 ≤ 100 ms. ``--src`` serves another source tree (an
earlier commit's ``src/``, static assets copied in) to compare a change side by side.

    .venv/bin/python bench/signaling_bench.py [--connections 500,1000,2000,3000] [--measure 30]
        [--settle 10] [--per-clinician 40] [--engine sqlite|postgresql] [--src DIR]

Targets 127.0.0.1 only; raises its own open-file limit (and the server's) to the hard limit; stops
the server and the holder process it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import resource
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import websockets
from visits_setup import Builder, Clinic, drop_database, load, new_database, open_clinic, pct, serving

from housecall.identity import sessions

HANDSHAKES_AT_ONCE = 20


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cookie(raw: str) -> dict[str, str]:
    return {"Cookie": f"{sessions.SESSION_COOKIE}={raw}"}


# -- set-up -----------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Who connects where. ``load``: (appointment, patient session) of the holder's waiting patients;
    ``pairs``: (appointment, clinician session, patient session); ``churn`` and ``watch``: a
    waiting patient per pair's clinician that leaves and comes back, and one that times updates."""

    load: list[tuple[str, str]] = field(default_factory=list)
    pairs: list[tuple[str, str, str]] = field(default_factory=list)
    churn: list[tuple[str, str]] = field(default_factory=list)
    watch: list[tuple[str, str]] = field(default_factory=list)


async def prepare(url: str, connections: int, per_clinician: int, pairs: int) -> Plan:
    db, clinic = await open_clinic(url)
    plan = Plan()
    n_clinicians = max(pairs, -(-connections // per_clinician))
    began = time.monotonic()
    try:
        async with db.transaction() as conn:
            b = Builder(conn, clinic)
            for c in range(n_clinicians):
                await b.clinician(c)
            # The holder's waiting patients, spread over the clinicians; their appointments over the
            # last hour and the next (the line is by appointment time, then check-in).
            for n in range(connections):
                c = n % n_clinicians
                p = await b.patient(n, c)
                appt = await b.visit(p, c, start_in_minutes=random.uniform(-60, 60), check_in=True)
                plan.load.append((appt, clinic.patient_sessions[p]))
                if n % 500 == 499:
                    print(
                        f"  set-up: {n + 1} waiting patients ({time.monotonic() - began:.0f} s)", flush=True
                    )
            for k in range(pairs):
                c = k % n_clinicians
                extra = []
                for role in ("pair", "churn", "watch"):
                    p = await b.patient(connections + 3 * k + len(extra), c)
                    # the watcher's appointment is last in the line: everyone's change moves it
                    start = {"pair": -5, "churn": -61, "watch": 61}[role]
                    extra.append(
                        (
                            await b.visit(p, c, start_in_minutes=start, check_in=True),
                            clinic.patient_sessions[p],
                        )
                    )
                plan.pairs.append((extra[0][0], clinic.clinician_sessions[c], extra[0][1]))
                plan.churn.append(extra[1])
                plan.watch.append(extra[2])
    finally:
        await db.close()
    print(f"  set-up: {len(clinic.patients)} patients, {len(clinic.clinicians)} clinicians in "
          f"{time.monotonic() - began:.0f} s", flush=True)  # fmt: skip
    _ = Clinic
    return plan


# -- the holder (its own process) -------------------------------------------------------------------


class Holder:
    def __init__(self, host: str) -> None:
        self.host = host
        self.open = 0
        self.closed = 0
        self.refused: list[str] = []
        self.waiting_msgs = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.handshakes: list[float] = []

    async def hold(self, appointment: str, raw: str, ready: asyncio.Event) -> None:
        url = f"ws://{self.host}/visits/{appointment}/signal"
        began = time.perf_counter()
        try:
            async with websockets.connect(url, additional_headers=cookie(raw), open_timeout=60,
                                          ping_interval=None, max_queue=None) as ws:  # fmt: skip
                first = orjson.loads(await ws.recv())
                if first.get("type") != "welcome":
                    self.refused.append(str(first))
                    return
                self.handshakes.append(time.perf_counter() - began)
                self.open += 1
                ready.set()
                async for text in ws:
                    if b'"waiting"' in (text if isinstance(text, bytes) else text.encode()):
                        self.waiting_msgs += 1
                self.closed += 1
                self.open -= 1
        except Exception as exc:  # counted and reported: the bench goes on
            if ready.is_set():
                self.closed += 1
                self.open -= 1
            else:
                self.refused.append(type(exc).__name__ + ": " + str(exc)[:80])
        finally:
            ready.set()

    async def grow(self, targets: list[tuple[str, str]]) -> dict[str, Any]:
        began = time.monotonic()
        self.handshakes = []
        gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)

        async def one(appointment: str, raw: str) -> None:
            async with gate:
                ready = asyncio.Event()
                self.tasks.append(asyncio.get_running_loop().create_task(self.hold(appointment, raw, ready)))
                await ready.wait()

        await asyncio.gather(*(one(a, r) for a, r in targets))
        return {"ramp": time.monotonic() - began, "open": self.open,
                "handshake_p50": pct(self.handshakes, 0.5), "handshake_p99": pct(self.handshakes, 0.99)}  # fmt: skip

    def stats(self) -> dict[str, Any]:
        return {"open": self.open, "closed": self.closed, "refused": len(self.refused),
                "refused_sample": self.refused[:3], "waiting_msgs": self.waiting_msgs}  # fmt: skip


def holder_main(host: str, pipe: Connection) -> None:
    raise_fd_limit()

    async def serve() -> None:
        holder = Holder(host)
        loop = asyncio.get_running_loop()
        while True:
            command, arg = await loop.run_in_executor(None, pipe.recv)
            if command == "grow":
                pipe.send(await holder.grow(arg))
            elif command == "stats":
                pipe.send(holder.stats())
            else:
                for t in holder.tasks:
                    t.cancel()
                await asyncio.gather(*holder.tasks, return_exceptions=True)
                pipe.send("stopped")
                return

    asyncio.run(serve())


# -- the probe (this process) -----------------------------------------------------------------------


async def next_of(ws: Any, kind: str, within: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        message = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if message["type"] == kind:
            return message  # type: ignore[no-any-return]


class Probe:
    def __init__(self, host: str, plan: Plan) -> None:
        self.host = host
        self.plan = plan
        self.stack = contextlib.AsyncExitStack()
        self.pairs: list[tuple[Any, Any, str]] = []  # (clinician ws, patient ws, patient member id)
        self.relay: list[float] = []
        self.slow: list[tuple[float, float]] = []  # (arrival time.time(), latency) over 100 ms
        self.updates: list[float] = []
        self.lost = 0
        self.churn_ws: list[Any] = []
        self.watch_ws: list[Any] = []
        self.watch_queues: list[asyncio.Queue[float]] = []
        self.readers: list[asyncio.Task[None]] = []

    async def connect(self, appointment: str, raw: str) -> Any:
        url = f"ws://{self.host}/visits/{appointment}/signal"
        client = websockets.connect(
            url, additional_headers=cookie(raw), open_timeout=60, ping_interval=None, max_queue=None
        )
        return await self.stack.enter_async_context(client)

    async def start(self) -> None:
        """The admitted pairs, and a churning and a watching waiting patient per pair's clinician."""
        for appointment, doctor_raw, patient_raw in self.plan.pairs:
            doctor = await self.connect(appointment, doctor_raw)
            await next_of(doctor, "welcome")
            patient = await self.connect(appointment, patient_raw)
            me = (await next_of(patient, "welcome"))["you"]
            await doctor.send(orjson.dumps({"type": "admit", "who": me}).decode())
            await next_of(patient, "admitted")
            await next_of(patient, "peers")
            self.pairs.append((doctor, patient, me))
            self.readers.append(asyncio.get_running_loop().create_task(self.read_relay(patient)))
            self.readers.append(asyncio.get_running_loop().create_task(self.drain(doctor)))
        for k, (appointment, raw) in enumerate(self.plan.watch):
            ws = await self.connect(appointment, raw)
            await next_of(ws, "waiting")
            queue: asyncio.Queue[float] = asyncio.Queue()
            self.watch_ws.append(ws)
            self.watch_queues.append(queue)
            self.readers.append(asyncio.get_running_loop().create_task(self.read_watch(ws, queue)))
            _ = k
        for appointment, raw in self.plan.churn:
            ws = await self.connect(appointment, raw)
            await next_of(ws, "waiting")
            self.churn_ws.append(ws)

    async def drain(self, ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for _ in ws:
                pass

    async def read_relay(self, ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for text in ws:
                message = orjson.loads(text)
                if message["type"] == "candidate":
                    took = time.perf_counter() - message["data"]["t"]
                    self.relay.append(took)
                    if took > 0.1:
                        self.slow.append((time.time(), took))

    async def read_watch(self, ws: Any, queue: asyncio.Queue[float]) -> None:
        with contextlib.suppress(Exception):
            async for text in ws:
                if orjson.loads(text)["type"] == "waiting":
                    queue.put_nowait(time.perf_counter())

    async def send_relay(self, until: float, rate: float) -> None:
        """Each pair's clinician sends ``candidate`` messages at ``rate``/s, staggered."""

        async def one(doctor: Any, to: str, offset: float) -> None:
            await asyncio.sleep(offset)
            n = 0
            while time.monotonic() < until:
                n += 1
                payload = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0",
                           "n": n, "t": time.perf_counter()}  # fmt: skip
                await doctor.send(orjson.dumps({"type": "candidate", "to": to, "data": payload}).decode())
                await asyncio.sleep(1 / rate)

        sent_before = len(self.relay)
        await asyncio.gather(*(one(d, me, random.uniform(0, 1 / rate)) for d, _p, me in self.pairs))
        await asyncio.sleep(1)  # the last ones in flight
        _ = sent_before

    async def churn(self, until: float, every: float) -> None:
        """One waiting patient leaves and comes back every ``every`` s, clinicians in turn; the
        watcher in that line times its new position."""
        k = 0
        while time.monotonic() < until:
            i = k % len(self.churn_ws)
            k += 1
            queue = self.watch_queues[i]
            while not queue.empty():
                queue.get_nowait()
            left = time.perf_counter()
            await self.churn_ws[i].close()
            try:
                got = await asyncio.wait_for(queue.get(), 10)
                self.updates.append(got - left)
            except TimeoutError:
                self.lost += 1
            appointment, raw = self.plan.churn[i]
            self.churn_ws[i] = await self.connect(appointment, raw)
            await next_of(self.churn_ws[i], "waiting")
            await asyncio.sleep(max(0.0, every - (time.perf_counter() - left)))

    async def measure(self, seconds: float, rate: float, churn_every: float) -> dict[str, Any]:
        self.relay, self.updates, self.lost, self.slow = [], [], 0, []
        until = time.monotonic() + seconds
        await asyncio.gather(self.send_relay(until, rate), self.churn(until, churn_every))
        return {
            "relay": list(self.relay),
            "updates": list(self.updates),
            "lost": self.lost,
            "slow": list(self.slow),
        }

    async def close(self) -> None:
        for t in self.readers:
            t.cancel()
        with contextlib.suppress(Exception):
            await self.stack.aclose()


# -- server accounting ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process and its children so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server_pid(proc_pid: int) -> int:
    """`housecall serve` runs uvicorn in the same process (one worker)."""
    return proc_pid


async def run_steps(
    host: str, pid: int, plan: Plan, steps: list[int], args: argparse.Namespace
) -> list[dict[str, Any]]:
    parent, child = mp.Pipe()
    holder = mp.get_context("spawn").Process(target=holder_main, args=(host, child), daemon=True)
    holder.start()
    loop = asyncio.get_running_loop()

    async def ask(command: str, arg: Any = None) -> Any:
        parent.send((command, arg))
        return await loop.run_in_executor(None, parent.recv)

    probe = Probe(host, plan)
    results = []
    try:
        await probe.start()
        held = 0
        for n in steps:
            print(f"\n== {n} waiting-room connections (load average {load()})", flush=True)
            grown = await ask("grow", plan.load[held:n])
            held = n
            print(f"  ramp: {grown['ramp']:.1f} s, handshake p50 {grown['handshake_p50'] * 1000:.0f} ms "
                  f"p99 {grown['handshake_p99'] * 1000:.0f} ms, open {grown['open']}", flush=True)  # fmt: skip
            await asyncio.sleep(args.settle)  # the ramp's own work done: measure holding, not opening
            before = await ask("stats")
            cpu0, wall0 = cpu_seconds(pid), time.monotonic()
            got = await probe.measure(args.measure, args.rate, args.churn)
            cpu1, wall1 = cpu_seconds(pid), time.monotonic()
            after = await ask("stats")
            relay, updates = got["relay"], got["updates"]
            row = {
                "n": n, "open": after["open"], "closed": after["closed"], "refused": after["refused"],
                "refused_sample": after["refused_sample"], "ramp": grown["ramp"],
                "relay_n": len(relay), "relay_p50": pct(relay, 0.5), "relay_p95": pct(relay, 0.95),
                "relay_p99": pct(relay, 0.99), "relay_max": max(relay) if relay else float("nan"),
                "upd_n": len(updates), "upd_p50": pct(updates, 0.5), "upd_p99": pct(updates, 0.99), "lost": got["lost"],
                "waiting_per_s": (after["waiting_msgs"] - before["waiting_msgs"]) / (wall1 - wall0),
                "cpu": (cpu1 - cpu0) / (wall1 - wall0), "rss": rss_mib(pid), "load": load(),
            }  # fmt: skip
            results.append(row)
            if got["slow"]:  # when the slow ones arrived: one stall, or spread out?
                worst = max(got["slow"], key=lambda s: s[1])
                spread = max(s[0] for s in got["slow"]) - min(s[0] for s in got["slow"])
                print(f"  {len(got['slow'])} relays over 100 ms, arriving over {spread:.1f} s; worst {worst[1] * 1000:.0f} ms "
                      f"at {time.strftime('%H:%M:%S', time.gmtime(worst[0]))}.{int(worst[0] % 1 * 1000):03d} UTC")  # fmt: skip
            print(f"  held {row['open']} (closed {row['closed']}, refused {row['refused']} {row['refused_sample']})\n"
                  f"  relay: {row['relay_n']} messages, p50 {row['relay_p50'] * 1000:.1f} ms, p95 {row['relay_p95'] * 1000:.1f} ms, "
                  f"p99 {row['relay_p99'] * 1000:.1f} ms, max {row['relay_max'] * 1000:.1f} ms\n"
                  f"  position update after a change in the line: {row['upd_n']}, p50 {row['upd_p50'] * 1000:.0f} ms, "
                  f"p99 {row['upd_p99'] * 1000:.0f} ms, {row['lost']} not within 10 s\n"
                  f"  position messages received by the holder: {row['waiting_per_s']:.0f}/s\n"
                  f"  server: CPU {row['cpu'] * 100:.0f}% of a core, RSS {row['rss']:.0f} MiB; load average {row['load']}",
                  flush=True)  # fmt: skip
    finally:
        await probe.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ask("stop"), 60)
        holder.join(10)
        if holder.is_alive():
            holder.kill()
            holder.join()
    return results


def report(results: list[dict[str, Any]]) -> None:
    print(
        "\n| connections | held | relay p50 / p95 / p99 / max ms | position update p50 / p99 ms | positions/s | server CPU | RSS MiB | load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        ok = "✔" if r["open"] >= r["n"] and r["relay_p99"] <= 0.1 else "✘"
        print(f"| {r['n']:,} | {r['open']:,} | {r['relay_p50'] * 1000:.1f} / {r['relay_p95'] * 1000:.1f} / "
              f"{r['relay_p99'] * 1000:.1f} / {r['relay_max'] * 1000:.0f} {ok} | {r['upd_p50'] * 1000:.0f} / {r['upd_p99'] * 1000:.0f} | "
              f"{r['waiting_per_s']:.0f} | {r['cpu'] * 100:.0f}% | {r['rss']:.0f} | {r['load']} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", default="500,1000,2000,3000",
                        help="waiting-room sockets per step, comma-separated and rising; one number N means 500, 1000, 2000, … up to N")  # fmt: skip
    parser.add_argument("--per-clinician", type=int, default=40, help="waiting patients per clinician")
    parser.add_argument("--pairs", type=int, default=10, help="admitted pairs exchanging messages")
    parser.add_argument("--rate", type=float, default=10, help="messages per second per pair")
    parser.add_argument("--churn", type=float, default=0.5, help="seconds between two changes in a line")
    parser.add_argument("--settle", type=float, default=10, help="seconds between a ramp and its measurement")
    parser.add_argument("--measure", type=float, default=30, help="seconds measured at each step")
    parser.add_argument("--engine", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--src", type=Path, help="serve the housecall package of this source tree (e.g. a "
                        "`git worktree` of an earlier commit's src/), to compare a change side by side")  # fmt: skip
    args = parser.parse_args()
    wanted = [int(x) for x in args.connections.split(",")]
    if len(wanted) == 1:
        top = wanted[0]
        wanted = [n for n in (500, 1000, 2000, 3000, 4000, 6000, 8000) if n < top] + [top]
    limit = raise_fd_limit()
    if limit < max(wanted) * 2 + 200:
        raise SystemExit(
            f"open-file limit {limit} is too low for {max(wanted)} connections (server and holder)"
        )
    random.seed(5)
    with tempfile.TemporaryDirectory() as tmp:
        url = new_database(args.engine, Path(tmp))
        try:
            print(
                f"setting up {max(wanted)} waiting patients ({args.engine}), load average {load()}",
                flush=True,
            )
            plan = asyncio.run(prepare(url, max(wanted), args.per_clinician, args.pairs))
            extra = {"PYTHONPATH": str(args.src.resolve())} if args.src else {}
            print(f"server code: {args.src.resolve() if args.src else 'this checkout'}", flush=True)
            with serving(url, Path(tmp) / "server.log", extra) as (host, proc):
                results = asyncio.run(run_steps(host, server_pid(proc.pid), plan, wanted, args))
                errors = [
                    line for line in (Path(tmp) / "server.log").read_text().splitlines() if "Error" in line
                ]
                if errors:
                    print(f"server log: {len(errors)} error lines, e.g. {errors[:3]}")
            report(results)
        finally:
            drop_database(url)


if __name__ == "__main__":
    main()
