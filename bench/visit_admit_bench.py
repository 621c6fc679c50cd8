"""From "admit" to the first decoded video frame on both sides, through the real app.

A fresh database (SQLite by default) with a patient and a clinician licensed in Vermont, signed in
(sessions written as a completed sign-in leaves them), and RUNS video visits booked for now; then
`housecall serve` on 127.0.0.1 and Debian's Chromium (Playwright, fake camera and microphone, the
flags of docs/VIDEO.md) with one context per person. Each run, on a fresh visit: the patient opens
the visit, checks in and waits; the clinician opens it, sees her in the lobby and clicks "Let in".
Both pages note ``Date.now()`` (one clock: the same machine) at the click and at the first
``getStats()`` poll (every 10 ms) where an inbound video stream has ``framesDecoded > 0``. The
clinician then hangs up and the next run starts. Media goes host to host on 127.0.0.1 (no TURN),
as in the raw Chromium-to-Chromium figure. Issue 5's floor: p95 ≤ 1.5 s on both sides.

    .venv/bin/python bench/visit_admit_bench.py [--runs 20] [--engine sqlite|postgresql]

Targets 127.0.0.1 only; stops the server and the browser it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from playwright.async_api import BrowserContext, Page, async_playwright, expect
from visits_setup import Builder, drop_database, load, new_database, open_clinic, pct, serving

from housecall.identity import sessions

CHROMIUM_ARGS = [
    "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-gpu", "--allow-loopback-in-peer-connection",
]  # fmt: skip

# Poll getStats until a remote video frame is decoded; resolves with Date.now() at that moment.
WATCH = """() => {
  window.__firstFrame = null;
  (async () => {
    while (true) {
      const rows = await window.housecallVisit.inbound();
      if (rows.some(r => r.framesDecoded > 0)) { window.__firstFrame = Date.now(); return; }
      await new Promise(r => setTimeout(r, 10));
    }
  })();
}"""
MARK_CLICK = "() => document.addEventListener('click', () => { window.__admitAt = Date.now(); }, {capture: true, once: true})"


async def prepare(url: str, runs: int) -> tuple[str, str, list[str]]:
    """Patient and clinician sessions and ``runs`` visits booked for now."""
    db, clinic = await open_clinic(url)
    try:
        async with db.transaction() as conn:
            b = Builder(conn, clinic)
            doctor = await b.clinician(0)
            patient = await b.patient(0, doctor)
            visits = [await b.visit(patient, doctor) for _ in range(runs)]
    finally:
        await db.close()
    return clinic.patient_sessions[0], clinic.clinician_sessions[0], visits


async def signed_in(browser: object, raw: str) -> tuple[BrowserContext, Page]:
    context: BrowserContext = await browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 375, "height": 740}, permissions=["camera", "microphone"]
    )
    await context.add_cookies([{"name": sessions.SESSION_COOKIE, "value": raw, "domain": "127.0.0.1", "path": "/",
                                "secure": True, "httpOnly": True, "sameSite": "Lax"}])  # fmt: skip
    return context, await context.new_page()


async def first_frame(page: Page, within: float = 30) -> int:
    """The page's ``Date.now()`` at its first decoded frame (the page times it; this only waits;
    the page's CSP forbids ``wait_for_function``'s string evaluation)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        at = await page.evaluate("window.__firstFrame")
        if at is not None:
            return int(at)
        await asyncio.sleep(0.05)
    raise AssertionError("no decoded video frame within 30 s")


async def one_run(base: str, appointment: str, patient: Page, doctor: Page) -> tuple[float, float]:
    """Seconds from the admit click to the first decoded frame: (patient, clinician)."""
    visit = f"{base}/visits/{appointment}"
    await patient.goto(visit)
    await patient.get_by_label("Which US state are you in right now?").select_option("VT")
    await patient.get_by_label("Phone number to call if video does not work").fill("802-555-0100")
    await patient.get_by_role("button", name="Check in").click()
    await expect(patient.get_by_role("heading", name="You are in the waiting room")).to_be_visible()
    await doctor.goto(visit)
    waiting = doctor.locator("#visit-lobby-list li")
    await expect(waiting).to_contain_text("Ana Reyes0 · VT")
    let_in = waiting.get_by_role("button", name="Let in")
    await expect(let_in).to_be_enabled()
    await patient.evaluate(WATCH)
    await doctor.evaluate(WATCH)
    await doctor.evaluate(MARK_CLICK)
    await let_in.click()
    patient_at, doctor_at = await first_frame(patient), await first_frame(doctor)
    admit_at = await doctor.evaluate("window.__admitAt")
    times = (patient_at - admit_at, doctor_at - admit_at)
    await doctor.get_by_role("button", name="Hang up").click()
    await expect(patient.locator("#visit-status")).to_contain_text("The visit has ended")
    return times[0] / 1000, times[1] / 1000


async def bench(url: str, runs: int, tmp: Path) -> None:
    patient_sid, doctor_sid, visits = await prepare(url, runs)
    with serving(url, tmp / "server.log") as (host, _proc):
        base = f"http://{host}"
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                patient_ctx, patient = await signed_in(browser, patient_sid)
                doctor_ctx, doctor = await signed_in(browser, doctor_sid)
                print(f"load average before: {load()}")
                pat: list[float] = []
                doc: list[float] = []
                began = time.monotonic()
                for n, appointment in enumerate(visits, 1):
                    tp, td = await one_run(base, appointment, patient, doctor)
                    pat.append(tp)
                    doc.append(td)
                    print(f"run {n:2d}: patient {tp:.3f} s, clinician {td:.3f} s")
                await patient_ctx.close()
                await doctor_ctx.close()
            finally:
                await browser.close()
    print(f"{runs} runs in {time.monotonic() - began:.0f} s, load average after: {load()}")
    for side, values in (("patient", pat), ("clinician", doc)):
        print(f"{side:9} median {statistics.median(values):.3f} s  p95 {pct(values, 0.95):.3f} s  "
              f"min {min(values):.3f}  max {max(values):.3f}  {'✔' if pct(values, 0.95) <= 1.5 else '✘'} p95 ≤ 1.5 s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--engine", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = new_database(args.engine, Path(tmp))
        try:
            asyncio.run(bench(url, args.runs, Path(tmp)))
        finally:
            drop_database(url)


if __name__ == "__main__":
    main()
