"""In the call, in two Chromium contexts against ``housecall serve`` with a local coturn: the page
steps down to audio only by itself when its stats say video cannot hold (a real trigger: the
patient's video sender capped to a trickle), and the call comes back after the signaling drops,
without a reload and without losing the visit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from playwright.async_api import Browser, Page, expect

from housecall.visits import service
from tests.e2e.test_accessibility import AXE, FAILING_IMPACTS, RUN_AXE
from tests.e2e.test_visit_story import _inbound, _until, browser, server_env  # noqa: F401
from tests.e2e.visit_clinic import encounter_of, signed_in, visit_clinic
from tests.identity.conftest import Mailbox, smtp  # noqa: F401 - smtp is a fixture
from tests.support import LiveServer
from tests.visits.conftest import coturn  # noqa: F401 - coturn is a fixture


@dataclass
class Call:
    setup: dict[str, str]
    patient: Page
    doctor: Page


def flowing(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and all(r["framesDecoded"] > 0 and r["audioPackets"] > 0 for r in rows)


@asynccontextmanager
async def in_call(
    server: LiveServer,
    browser: Browser,  # noqa: F811
    database_url: str,
    smtp_port: int,
) -> AsyncIterator[Call]:
    """Checked in, admitted, and media flowing both ways."""
    setup = await visit_clinic(database_url, smtp_port)
    visit = f"{server.base}/visits/{setup['appointment']}"
    patient_ctx, patient = await signed_in(browser, setup["patient"])
    doctor_ctx, doctor = await signed_in(browser, setup["clinician"])
    try:
        await patient.goto(visit)
        await patient.get_by_label("Which US state are you in right now?").select_option("VT")
        await patient.get_by_label("Phone number to call if video does not work").fill("802-555-0100")
        await patient.get_by_role("button", name="Check in").click()
        await expect(patient.get_by_role("heading", name="You are in the waiting room")).to_be_visible()
        await doctor.goto(visit)
        await doctor.locator("#visit-lobby-list li").get_by_role("button", name="Let in").click()
        await _until(patient, flowing, "patient receives video and audio")
        await _until(doctor, flowing, "clinician receives video and audio")
        yield Call(setup, patient, doctor)
    finally:
        await patient_ctx.close()
        await doctor_ctx.close()


async def _accessible(page: Page) -> None:
    """axe finds nothing serious on the call as it stands (the step-down notice, chat, files)."""
    await page.evaluate(AXE.read_text())
    result = await page.evaluate(RUN_AXE)
    assert result["passes"] > 0
    assert [v for v in result["violations"] if v["impact"] in FAILING_IMPACTS] == []


async def _frames_grow(page: Page, what: str, within: float = 20) -> None:
    """Video frames keep being decoded (not only some were, once)."""
    first = await _until(page, flowing, what, within)
    before = sum(r["framesDecoded"] for r in first)
    await _until(page, lambda rows: sum(r["framesDecoded"] for r in rows) > before + 10, what, within)


async def test_the_step_down_decision_on_made_up_samples(server: LiveServer, browser: Browser,  # noqa: F811
                                                         database_url: str, smtp: tuple[Mailbox, int]) -> None:  # noqa: F811  # fmt: skip
    async with in_call(server, browser, database_url, smtp[1]) as call:
        verdicts = await call.patient.evaluate("""() => {
            const v = window.housecallVisit;
            const good = {rttMs: 40, lossPct: 0, bitrateKbps: 1500, fpsOut: 30, fpsIn: 30};
            const poor = (change) => Object.assign({}, good, change);
            const hold = v.limits.holdSeconds;
            const row = (s) => Array(hold).fill(s);
            return {
                good: v.videoCannotHold(row(good)),
                rtt: v.videoCannotHold(row(poor({rttMs: 450}))),
                loss: v.videoCannotHold(row(poor({lossPct: 8}))),
                bitrate: v.videoCannotHold(row(poor({bitrateKbps: 120}))),
                fpsOut: v.videoCannotHold(row(poor({fpsOut: 2}))),
                fpsIn: v.videoCannotHold(row(poor({fpsIn: 1}))),
                notLongEnough: v.videoCannotHold(row(poor({rttMs: 900})).slice(1)),
                oneGoodSecond: v.videoCannotHold([...row(poor({lossPct: 20})), good]),
                unknownIsNotPoor: v.videoCannotHold(row({rttMs: null, lossPct: null, bitrateKbps: null,
                                                         fpsOut: null, fpsIn: null})),
                reasons: [v.poorReason(poor({rttMs: 401})), v.poorReason(poor({bitrateKbps: 299})),
                          v.poorReason(good)],
            };
        }""")
        assert verdicts == {"good": False, "rtt": True, "loss": True, "bitrate": True, "fpsOut": True,
                            "fpsIn": True, "notLongEnough": False, "oneGoodSecond": False,
                            "unknownIsNotPoor": False, "reasons": ["rtt", "bitrate", None]}  # fmt: skip
        # A healthy call on this machine reads as healthy: no step-down after the warm-up.
        await asyncio.sleep(9)
        assert await call.patient.evaluate("window.housecallVisit.audioOnly()") is False
        assert await call.doctor.evaluate("window.housecallVisit.audioOnly()") is False
        samples = await call.patient.evaluate("window.housecallVisit.samples()")
        assert samples and samples[0], samples
        assert await call.patient.evaluate("(s) => s.some(x => window.housecallVisit.poorReason(x))",
                                           samples[0][-3:]) is False, samples[0][-3:]  # fmt: skip


async def test_video_steps_down_to_audio_when_it_cannot_hold(server: LiveServer, browser: Browser,  # noqa: F811
                                                            database_url: str, smtp: tuple[Mailbox, int]) -> None:  # noqa: F811  # fmt: skip
    async with in_call(server, browser, database_url, smtp[1]) as call:
        patient, doctor = call.patient, call.doctor
        # The patient's uplink can carry only a trickle of video: a few kbit/s, one frame a second.
        await patient.evaluate("""async () => {
            for (const pc of window.housecallVisit.connections()) {
                for (const s of pc.getSenders()) {
                    if (s.track && s.track.kind === "video") {
                        const p = s.getParameters();
                        p.encodings[0].maxBitrate = 20000;
                        p.encodings[0].maxFramerate = 1;
                        await s.setParameters(p);
                    }
                }
            }
        }""")
        # The page notices by itself, says so in words, and offers to try video again.
        notice = patient.locator("#visit-stepdown")
        await expect(notice).to_be_visible(timeout=25_000)
        await expect(notice).to_contain_text("too weak for video")
        assert await patient.evaluate("window.housecallVisit.autoStepped()") is True
        await _accessible(patient)
        await expect(doctor.locator("#visit-status")).to_contain_text("the call continues with audio only")
        # Same path as the manual switch: the camera is released, no new video frames, audio goes on.
        assert (
            await patient.evaluate("document.getElementById('visit-local').srcObject.getVideoTracks().length")
            == 0
        )
        await asyncio.sleep(1.5)
        before = (await _inbound(doctor))[0]
        await asyncio.sleep(2.0)
        after = (await _inbound(doctor))[0]
        assert after["framesDecoded"] - before["framesDecoded"] <= 1, (before, after)
        assert after["audioPackets"] > before["audioPackets"] + 20, (before, after)

        encounter, _chat = await encounter_of(database_url, smtp[1], call.setup)
        history = service.modality_history(encounter)
        assert [(h["mode"], h.get("how")) for h in history] == [("video", None), ("audio", "auto")]
        assert encounter["status"] == "in-progress"

        # The uplink recovers, and "Try video again" brings the picture back.
        await patient.evaluate("""async () => {
            for (const pc of window.housecallVisit.connections()) {
                for (const s of pc.getSenders()) {
                    const p = s.getParameters();
                    if (p.encodings && p.encodings.length && p.encodings[0].maxFramerate) {
                        delete p.encodings[0].maxBitrate;
                        delete p.encodings[0].maxFramerate;
                        await s.setParameters(p);
                    }
                }
            }
        }""")
        await patient.get_by_role("button", name="Try video again").click()
        await expect(notice).to_be_hidden()
        start = (await _inbound(doctor))[0]["framesDecoded"]
        await _until(
            doctor, lambda rows: rows[0]["framesDecoded"] > start + 10, "video back at the clinician"
        )


async def test_the_call_comes_back_after_the_connection_drops(server: LiveServer, browser: Browser,  # noqa: F811
                                                              database_url: str, smtp: tuple[Mailbox, int]) -> None:  # noqa: F811  # fmt: skip
    async with in_call(server, browser, database_url, smtp[1]) as call:
        patient, doctor = call.patient, call.doctor
        await patient.evaluate("window.notReloaded = true")
        old_id = await patient.evaluate("window.housecallVisit.me()")
        # The signaling drops under the patient (as when the network goes away for a moment).
        # (Playwright's offline mode does not reach WebSockets to 127.0.0.1, so the socket is closed
        # under the page.)
        await patient.evaluate("window.housecallVisit.signal().close()")
        await expect(patient.locator("#visit-status")).to_have_text("Reconnecting…", timeout=2_000)
        # It comes back by itself, the patient straight into the call (the visit is in progress).
        await expect(patient.locator("#visit-status")).to_have_text("In the call.", timeout=15_000)
        assert await patient.evaluate("window.housecallVisit.me()") != old_id
        await _frames_grow(patient, "video flows to the patient again")
        await _frames_grow(doctor, "video flows to the clinician again")
        assert await patient.evaluate("window.notReloaded") is True
        rows = await _inbound(doctor)
        assert len(rows) == 1, rows  # the old connection is gone, not left hanging

        # The media path breaks and mends with an ICE restart through the signaling.
        ufrag = (
            "() => window.housecallVisit.connections()[0].localDescription.sdp.match(/a=ice-ufrag:(\\S+)/)[1]"
        )
        before = await patient.evaluate(ufrag)
        assert await patient.evaluate("window.housecallVisit.restartIce()") == 1
        await expect(patient.locator("#visit-status")).to_have_text("Reconnected. You are in the call.",
                                                                    timeout=10_000)  # fmt: skip
        assert await patient.evaluate(ufrag) != before  # new ICE credentials: a real restart
        await _frames_grow(doctor, "video flows after the ICE restart")
        await _frames_grow(patient, "video flows to the patient after the ICE restart")
        encounter, _chat = await encounter_of(database_url, smtp[1], call.setup)
        assert encounter["status"] == "in-progress"
