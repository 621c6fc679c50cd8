"""The technology check's far end: a server-side WebRTC peer (aiortc) that sends back whatever
audio and video it receives, through the same TURN configuration a visit uses. The page measures
round-trip time, available bitrate, loss and the candidate type of that call with ``getStats``.

The media never leaves this process and nothing is stored but the verdict. Each signed-in person
has at most one echo call, the process at most ``visit_echo_peers`` at once, each closed after
``visit_echo_seconds`` whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay


class Busy(Exception):
    """Too many echo calls in progress; the page asks to try again in a minute."""


class EchoPeers:
    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.active: dict[str, RTCPeerConnection] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    async def answer(
        self, key: str, offer: dict[str, Any], ice_servers: list[dict[str, Any]]
    ) -> dict[str, str]:
        """Answer ``offer`` (complete, non-trickle SDP) for ``key`` (one person); returns the
        answer with all our candidates in it (aiortc gathers before answering)."""
        await self.close(key)
        if len(self.active) >= self.limit:
            raise Busy
        sdp, kind = offer.get("sdp"), offer.get("type")
        if not isinstance(sdp, str) or kind != "offer" or len(sdp) > 64 * 1024:
            raise ValueError("not an offer")
        servers = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in ice_servers
        ]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))  # never Google's default STUN
        relay = MediaRelay()
        self.active[key] = pc

        @pc.on("track")
        def on_track(track: Any) -> None:
            pc.addTrack(relay.subscribe(track))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.close(key, pc)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            await self.close(key, pc)
            raise
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(self.seconds, lambda: loop.create_task(self.close(key, pc)))
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    async def close(self, key: str, pc: RTCPeerConnection | None = None) -> None:
        current = self.active.get(key)
        if current is None or (pc is not None and current is not pc):
            return
        del self.active[key]
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        with contextlib.suppress(Exception):
            await current.close()

    async def close_all(self) -> None:
        for key in list(self.active):
            await self.close(key)
