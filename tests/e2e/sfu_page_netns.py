"""The visit page (Chromium) in a call that goes through a real Janus VideoRoom, inside a network
namespace of its own.

Run as root under ``unshare --net`` (``tests/e2e/test_visit_sfu.py`` does):
``unshare --net python -m tests.e2e.sfu_page_netns WORKDIR``, with ``WORKDIR/setup.json`` naming
the database, the visit and the signed-in sessions. libnice (Janus's ICE) skips loopback, so the
namespace gets a veth interface (``tests/visits/sfu_netns.network``) that Janus, Chromium and the
aiortc clinician all reach; ``housecall serve``, Janus, Chromium and the clinician all run in here.
Two clinicians are aiortc peers speaking the visit's ``sfu-*`` messages on raw WebSockets; the
patient is the real page. The threshold is two people, so the call is peer to peer until the
second clinician joins. Prints one JSON object of what it saw;
the test asserts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import aioice.ice
import orjson
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from playwright.async_api import Page, async_playwright, expect

from housecall.identity import sessions
from tests.e2e.conftest import server_settings
from tests.support import LiveServer
from tests.visits import janus_server
from tests.visits.sfu_netns import ADDRESS, INTERFACE, Colour, Seen, network, wait_for

PORT = 8000
CLINICIAN_COLOUR = (41, 240, 110)  # blue, as (Y, U, V): the page checks it sees this one
COLLEAGUE_COLOUR = (81, 90, 240)  # red

# docs/VIDEO.md's flags; host candidates without mDNS names (Janus resolves none in here).
CHROMIUM_ARGS = [
    "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-gpu", "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
]  # fmt: skip


class Mailbox:
    """A raw WebSocket of the visit's signaling whose messages wait until taken, by type."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.box: list[dict[str, Any]] = []

    async def send(self, **message: Any) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def take_any(self, kinds: tuple[str, ...], within: float = 15) -> dict[str, Any]:
        """The first waiting message of any of ``kinds`` (errors here: refusals of our requests)."""
        deadline = time.monotonic() + within
        while True:
            for i, m in enumerate(self.box):
                if m.get("type") in kinds and (m["type"] != "error" or "refused" in m):
                    return self.box.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"none of {kinds}: {[m.get('type') for m in self.box]}")
            with contextlib.suppress(TimeoutError):
                self.box.append(orjson.loads(await asyncio.wait_for(self.ws.recv(), left)))

    async def take(self, kind: str, within: float = 15, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            for i, m in enumerate(self.box):
                if m.get("type") == kind and all(m.get(k) == v for k, v in match.items()):
                    return self.box.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} {match}: {[m.get('type') for m in self.box]}")
            with contextlib.suppress(TimeoutError):
                self.box.append(orjson.loads(await asyncio.wait_for(self.ws.recv(), left)))


async def publish(sock: Mailbox, colour: tuple[int, int, int]) -> RTCPeerConnection:
    """An aiortc participant publishes a camera of one colour and a tone through the SFU."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(Colour(colour), direction="sendonly")
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    await sock.send(type="sfu-publish", sdp=pc.localDescription.sdp)
    answer = await sock.take("sfu-answer")
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    return pc


async def receive(sock: Mailbox, peer: str, seen: Seen) -> RTCPeerConnection:
    """The clinician receives ``peer`` (the page's upstream) through the SFU."""
    for _ in range(40):  # the feed is announced when published, listed once its media is up
        await sock.send(type="sfu-subscribe", peer=peer)
        reply = await sock.take_any(("sfu-offer", "error"))
        if reply["type"] == "sfu-offer":
            break
        assert reply.get("code") == "no-such-peer", reply
        await asyncio.sleep(0.25)
    offer = reply
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.on("track", lambda track: asyncio.ensure_future(seen.read(track)))
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    await sock.send(type="sfu-start", key=offer["key"], sdp=pc.localDescription.sdp)
    await sock.take("sfu-started", key=offer["key"])
    return pc


async def until(page: Page, script: str, check: Any, within: float = 25) -> Any:
    """Poll ``script`` in the page until ``check`` holds (or the deadline: the last value)."""
    deadline = time.monotonic() + within
    value = None
    while time.monotonic() < deadline:
        value = await page.evaluate(script)
        if check(value):
            return value
        await asyncio.sleep(0.25)
    return value


def decoding_from(peer: str) -> Any:
    return lambda rows: any(
        r["peer"] == peer and r["framesDecoded"] > 0 and r["audioPackets"] > 0 for r in rows
    )


# The average colour of the first remote tile, as (R, G, B): the clinician's blue, not green.
TILE_COLOUR = """() => {
    const v = document.querySelector('#visit-remotes video[aria-label="Maya Carter"]');
    if (!v || !v.videoWidth) { return null; }
    const c = document.createElement('canvas'); c.width = 32; c.height = 24;
    const g = c.getContext('2d'); g.drawImage(v, 0, 0, 32, 24);
    const d = g.getImageData(0, 0, 32, 24).data; const sum = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) { sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2]; }
    return sum.map((x) => x / (d.length / 4));
}"""


async def scenario(setup: dict[str, Any], janus: janus_server.Janus) -> dict[str, Any]:
    out: dict[str, Any] = {}
    env = {**server_settings(PORT, int(setup["smtp_port"])), "HOUSECALL_SFU": "janus", "HOUSECALL_SFU_THRESHOLD": "2",
           "HOUSECALL_JANUS_URL": janus.url, "HOUSECALL_JANUS_API_SECRET": janus.api_secret,
           "HOUSECALL_JANUS_ADMIN_KEY": janus.admin_key, "HOUSECALL_JANUS_KEEPALIVE_SECONDS": "5"}  # fmt: skip
    server = LiveServer(setup["database_url"], port=PORT, extra_env=env).start()
    visit = f"{server.base}/visits/{setup['appointment']}"
    pcs: list[RTCPeerConnection] = []
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            context = await browser.new_context(permissions=["camera", "microphone"])
            await context.add_cookies([{"name": sessions.SESSION_COOKIE, "value": setup["patient"],
                                        "domain": "127.0.0.1", "path": "/", "secure": True, "httpOnly": True,
                                        "sameSite": "Lax"}])  # fmt: skip
            page = await context.new_page()
            await page.goto(visit)
            await page.get_by_label("Which US state are you in right now?").select_option("VT")
            await page.get_by_label("Phone number to call if video does not work").fill("802-555-0100")
            await page.get_by_role("button", name="Check in").click()
            await expect(page.get_by_role("heading", name="You are in the waiting room")).to_be_visible()

            cookie = f"{sessions.SESSION_COOKIE}={setup['clinician']}"
            url = f"ws://127.0.0.1:{PORT}/visits/{setup['appointment']}/signal"
            async with websockets.connect(url, additional_headers={"Cookie": cookie}, open_timeout=5) as ws:
                doctor = Mailbox(ws)
                ids = {"doctor": (await doctor.take("welcome"))["you"]}
                ids["patient"] = await until(page, "window.housecallVisit.me()", bool)
                await doctor.send(type="admit", who=ids["patient"])
                # Two people: at the threshold the call stays peer to peer.
                await until(page, "window.housecallVisit.admitted()", bool, 10)
                await asyncio.sleep(1)
                out["sfu_at_two"] = await page.evaluate("window.housecallVisit.sfu()")

                # A third (a second clinician, in the call as they connect) crosses it: everyone
                # goes through Janus.
                started = time.monotonic()
                colleague_cookie = {"Cookie": f"{sessions.SESSION_COOKIE}={setup['colleague']}"}
                async with websockets.connect(
                    url, additional_headers=colleague_cookie, open_timeout=5
                ) as cws:
                    colleague = Mailbox(cws)
                    ids["colleague"] = (await colleague.take("welcome"))["you"]
                    out["doctor_sfu_on"] = (await doctor.take("sfu"))["on"]
                    out["colleague_sfu_on"] = (await colleague.take("sfu"))["on"]
                    pcs.append(await publish(doctor, CLINICIAN_COLOUR))
                    pcs.append(await publish(colleague, COLLEAGUE_COLOUR))
                    await doctor.take("sfu-feed", peer=ids["colleague"])
                    out.update(await through_janus(page, doctor, ids, started, pcs))

                # The second clinician left: the page closes that subscription and its tile only.
                out["after_colleague_left"] = await until(
                    page, "window.housecallVisit.sfu()", lambda s: len(s["subscriptions"]) == 1, 10
                )
                out["tiles_after_colleague_left"] = await page.locator("#visit-remotes video").count()

            # The clinician left too: nothing is received any more.
            out["after_doctor_left"] = await until(
                page, "window.housecallVisit.sfu()", lambda s: not s["subscriptions"], 10
            )
            out["tiles_after_left"] = await page.locator("#visit-remotes video").count()
            await context.close()
            await browser.close()
    finally:
        for pc in pcs:
            await pc.close()
        server.stop()
    return out


async def through_janus(
    page: Page, doctor: Mailbox, ids: dict[str, str], started: float, pcs: list[RTCPeerConnection]
) -> dict[str, Any]:
    """Three people through Janus: what the page and the clinician see, audio only, and a dropped
    signaling under the page."""
    out: dict[str, Any] = {}
    # The page publishes once (the clinician is told) and subscribes to both others.
    await doctor.take("sfu-feed", within=20, peer=ids["patient"])
    seen = Seen()
    pcs.append(await receive(doctor, ids["patient"], seen))
    both = lambda rows: decoding_from(ids["doctor"])(rows) and decoding_from(ids["colleague"])(rows)  # noqa: E731
    rows = await until(page, "window.housecallVisit.inbound()", both)
    out["page_decodes"] = both(rows)
    out["seconds_to_page_frames"] = round(time.monotonic() - started, 2)
    out["page_rows"] = rows
    await wait_for(lambda: seen.frames >= 5, 20)
    out["doctor_saw"] = {"frames": seen.frames, "audio": seen.audio, "u": seen.u, "v": seen.v}
    out["page_sent"] = await page.evaluate("window.housecallVisit.outbound()")
    out["page_sfu"] = await page.evaluate("window.housecallVisit.sfu()")
    out["page_connections"] = await page.evaluate("window.housecallVisit.connections().length")
    out["tile_colour"] = await until(page, TILE_COLOUR, bool, 5)

    # Audio only through the SFU: the upstream stops sending video, audio goes on.
    await page.get_by_role("button", name="Audio only").click()
    await asyncio.sleep(1)
    before = await page.evaluate("window.housecallVisit.outbound()")
    await asyncio.sleep(1.5)
    after = await page.evaluate("window.housecallVisit.outbound()")
    out["audio_only"] = {"frames_more": after["framesSent"] - before["framesSent"],
                         "audio_more": after["audioPackets"] - before["audioPackets"]}  # fmt: skip
    await page.get_by_role("button", name="Back to video").click()

    # The signaling drops under the page: it comes back with a new id, publishes and subscribes
    # again; the clinician is told the old id left and the new one publishes.
    await page.evaluate("window.housecallVisit.signal().close()")
    assert (await doctor.take("left", within=10))["peer"] == ids["patient"]
    back = (await doctor.take("sfu-feed", within=30))["peer"]
    out["new_id_after_drop"] = back != ids["patient"]
    seen_again = Seen()
    pcs.append(await receive(doctor, back, seen_again))
    rows = await until(page, "window.housecallVisit.inbound()", both)
    out["page_decodes_after_drop"] = both(rows)
    await wait_for(lambda: seen_again.frames >= 5, 20)
    out["doctor_saw_after_drop"] = {"frames": seen_again.frames, "u": seen_again.u, "v": seen_again.v}
    out["page_sfu_after_drop"] = await page.evaluate("window.housecallVisit.sfu()")
    # Past the warm-up the step-down reads the upstream's and the subscriptions' stats.
    samples = await until(page, "window.housecallVisit.samples()",
                          lambda rows: sum(len(r) for r in rows) >= 3, 12)  # fmt: skip
    out["stats_samples"] = sum(len(r) for r in samples)
    out["auto_stepped"] = await page.evaluate("window.housecallVisit.autoStepped()")
    return out


def main() -> None:
    work = Path(sys.argv[1])
    setup = json.loads((work / "setup.json").read_text())
    network()
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [ADDRESS]  # type: ignore[assignment]
    with janus_server.running(work, port=8088, interface=INTERFACE) as janus:
        result = asyncio.run(scenario(setup, janus))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
