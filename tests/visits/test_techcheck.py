"""The technology check: an aiortc peer plays the patient's browser, calls the server's echo peer
through the local coturn with the credential the check page hands out (relay only), gets its own
video back, and the verdict is stored where the care team's waiting room shows it."""

from __future__ import annotations

import asyncio
import html
import re
import time
from typing import Any

import orjson
import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from housecall.visits import service
from housecall.visits.service import CheckStats, verdict
from tests.clinic import text_of
from tests.visits.conftest import Booked, Turn

CSRF = re.compile(r'data-csrf="([0-9a-f]+)"')
ICE = re.compile(r'data-ice="([^"]*)"')


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (CheckStats(connected=False), "phone"),
        (
            CheckStats(connected=True, rtt_ms=40, bitrate_kbps=1500, loss_pct=0, candidate="host", frames=90),
            "video",
        ),
        (CheckStats(connected=True, rtt_ms=650, bitrate_kbps=1500, loss_pct=0, frames=90), "audio"),
        (CheckStats(connected=True, rtt_ms=40, bitrate_kbps=120, loss_pct=0, frames=90), "audio"),
        (CheckStats(connected=True, rtt_ms=40, bitrate_kbps=1500, loss_pct=12, frames=90), "audio"),
        (CheckStats(connected=True, rtt_ms=40, bitrate_kbps=1500, loss_pct=0, frames=0), "audio"),
    ],
)
def test_the_verdict_is_plain(stats: CheckStats, expected: str) -> None:
    assert verdict(stats) == expected


async def test_an_echo_call_through_coturn_gives_a_stored_verdict(booked: Booked, coturn: Turn) -> None:
    c = booked.clinic
    c.env.settings.turn_urls = coturn.urls
    c.env.settings.turn_secret = coturn.secret
    browser = c.browsers["patient"]
    page = await browser.get("/visits/check")
    assert page.status_code == 200 and '<script src="/static/techcheck.js">' in page.text
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    ice = orjson.loads(html.unescape(ICE.search(page.text).group(1)))  # type: ignore[union-attr]
    assert ice[0]["urls"] == coturn.urls and ice[0]["username"].endswith(f"check-{c.accounts['patient'].id}")

    pc = RTCPeerConnection(RTCConfiguration(
        iceServers=[RTCIceServer(urls=s["urls"], username=s["username"], credential=s["credential"]) for s in ice],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    ))  # fmt: skip
    pc.addTrack(VideoStreamTrack())
    pc.addTrack(AudioStreamTrack())
    echoed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track: Any) -> None:
        if track.kind == "video" and not echoed.done():
            echoed.set_result(track)

    try:
        # Without the CSRF header the offer is refused.
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "sdp": pc.localDescription.sdp}
        assert (await browser.post("/visits/check/offer", json=offer)).status_code == 403
        r = await browser.post("/visits/check/offer", json=offer, headers={"X-CSRF-Token": token})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert " typ relay" in answer["sdp"]  # the echo peer is reachable through the same TURN server
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        deadline = time.monotonic() + 15
        while pc.connectionState != "connected":
            assert pc.connectionState != "failed" and time.monotonic() < deadline, pc.connectionState
            await asyncio.sleep(0.05)
        track = await asyncio.wait_for(echoed, 10)
        frames = 0
        for _ in range(5):
            await asyncio.wait_for(track.recv(), 10)
            frames += 1
        transport = pc.getTransceivers()[0].receiver.transport.transport
        selected = transport.iceGatherer.getLocalCandidates()
        assert all(cand.type == "relay" for cand in selected)
    finally:
        await pc.close()
    stats = {"connected": True, "rtt_ms": 3.2, "bitrate_kbps": 2500, "loss_pct": 0, "candidate": "relay",
             "frames": frames}  # fmt: skip
    r = await browser.post("/visits/check/result", json=stats, headers={"X-CSRF-Token": token})
    assert r.status_code == 200
    assert r.json() == {"verdict": "video", "text": "Video should work.", "stored": True}
    stored = await c.search("Observation", [("subject", f"Patient/{c.patient}"),
                                            ("code", f"{service.VISIT_SYSTEM}|{service.TECH_CHECK_CODE}")])  # fmt: skip
    assert len(stored) == 1
    obs = stored[0]
    assert obs["valueCodeableConcept"]["coding"][0]["code"] == "video"
    parts = {p["code"]["coding"][0]["code"]: p.get("valueQuantity", {}).get("value", p.get("valueString"))
             for p in obs["component"]}  # fmt: skip
    assert parts == {"rtt": 3.2, "bitrate": 2500, "loss": 0, "frames": 5, "candidate": "relay"}
    assert c.env.app.state.visit_echo.active == {}  # the echo call was closed with the result

    # A later check that could not connect: the newest verdict is what staff see in the waiting room.
    r = await browser.post("/visits/check/result", json={"connected": False}, headers={"X-CSRF-Token": token})
    assert r.json()["verdict"] == "phone"
    assert (await booked.check_in()).status_code == 303
    room = text_of((await c.browsers["clinician"].get("/workspace/visits")).text)
    assert "Ana Reyes" in room and "Your network blocks video — we will call you by phone instead." in room


async def test_bad_offers_and_staff_checks(booked: Booked) -> None:
    c = booked.clinic
    nurse = c.browsers["nurse"]
    page = await nurse.get("/visits/check")
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    r = await nurse.post("/visits/check/offer", content=b"{not json", headers={"X-CSRF-Token": token})
    assert r.status_code == 400
    r = await nurse.post(
        "/visits/check/offer", json={"type": "answer", "sdp": "v=0"}, headers={"X-CSRF-Token": token}
    )
    assert r.status_code == 400
    # Staff may run the check for themselves: a verdict, nothing stored (no patient record).
    stats = {"connected": True, "rtt_ms": 900, "bitrate_kbps": 2000, "frames": 50, "candidate": "weird"}
    r = await nurse.post("/visits/check/result", json=stats, headers={"X-CSRF-Token": token})
    assert r.json() == {"verdict": "audio", "text": "Use audio only: your connection is too weak for video.",
                        "stored": False}  # fmt: skip
