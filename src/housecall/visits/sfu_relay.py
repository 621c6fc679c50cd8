"""The visit's signaling speaking to the SFU (decision 0022): the messages a visit page exchanges
on its WebSocket to go through the SFU, and the hooks ``visits/signal.py`` calls when a member is
admitted, leaves, or the visit ends.

Messages (only from and to admitted members; the waiting room holds here as everywhere):

- server → clients: ``sfu {on: true}`` once the call has more than ``sfu_threshold`` people (and
  to everyone admitted afterwards): each page stops its peer connections and publishes to the SFU;
  ``sfu-feed {peer}`` when a member's upstream is ready, so the others subscribe to it;
- client → server: ``sfu-publish {sdp}`` (the page's complete offer) → ``sfu-answer {sdp}``;
  ``sfu-subscribe {peer}`` → ``sfu-offer {peer, key, sdp}`` (the SFU's offer);
  ``sfu-start {key, sdp}`` (the page's answer) → ``sfu-started {key, peer}``;
- refusals come back as ``error {code, refused}`` like the rest of the signaling.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from housecall.core.settings import Settings
from housecall.visits.sfu import SfuError, SfuRooms, rooms_from_settings

if TYPE_CHECKING:
    from housecall.visits.signal import Member, Room

log = logging.getLogger(__name__)

MESSAGES = frozenset({"sfu-publish", "sfu-subscribe", "sfu-start"})
MAX_SDP = 64 * 1024

_ROOMS: dict[tuple[Any, ...], SfuRooms | None] = {}


def rooms_for(settings: Settings) -> SfuRooms | None:
    """This process's SFU life cycle for these settings (one per configuration), or None."""
    key = (settings.sfu, settings.janus_url, settings.janus_api_secret, settings.janus_admin_key,
           settings.sfu_threshold)  # fmt: skip
    if key not in _ROOMS:
        _ROOMS[key] = rooms_from_settings(settings)
    return _ROOMS[key]


async def admitted(rooms: SfuRooms | None, room: Room, member: Member) -> None:
    """``member`` is now in the call: switch the visit to the SFU when it has become too large for
    peer to peer, or tell the newcomer the visit is already on it."""
    if rooms is None:
        return
    if rooms.active(room.org_id, room.appointment_id):
        member.send({"type": "sfu", "on": True})
        return
    if rooms.wanted(len(room.admitted())):
        try:
            await rooms.room_for(room.org_id, room.appointment_id)
        except SfuError:  # the SFU is down: the call stays peer to peer rather than failing
            log.exception("could not open the visit's SFU room")
            return
        room.broadcast({"type": "sfu", "on": True})


async def handle(rooms: SfuRooms | None, room: Room, member: Member, message: dict[str, Any]) -> None:
    """One ``sfu-*`` message of an admitted member (the caller has checked admission; ``SfuRooms``
    checks it again before any grant)."""
    kind = message["type"]
    if rooms is None or not rooms.active(room.org_id, room.appointment_id):
        member.send({"type": "error", "code": "no-sfu", "refused": kind})
        return
    sdp = message.get("sdp")
    if kind in ("sfu-publish", "sfu-start") and (not isinstance(sdp, str) or len(sdp) > MAX_SDP):
        member.send({"type": "error", "code": "bad-sdp", "refused": kind})
        return
    org, visit = room.org_id, room.appointment_id
    try:
        if kind == "sfu-publish":
            assert isinstance(sdp, str)
            publication = await rooms.publish(org, visit, member, sdp)
            member.send({"type": "sfu-answer", "sdp": publication.answer})
            room.broadcast({"type": "sfu-feed", "peer": member.id}, but=member)
        elif kind == "sfu-subscribe":
            peer = str(message.get("peer", ""))
            subscription = await rooms.subscribe_to(org, visit, member, peer)
            member.send(
                {"type": "sfu-offer", "peer": peer, "key": subscription.key, "sdp": subscription.offer}
            )
        elif kind == "sfu-start":
            assert isinstance(sdp, str)
            key = str(message.get("key", ""))
            await rooms.start(member, key, sdp)
            member.send({"type": "sfu-started", "key": key})
    except SfuError as exc:
        member.send({"type": "error", "code": exc.code, "refused": kind})


async def left(rooms: SfuRooms | None, room: Room, member: Member) -> None:
    """``member`` left the call (closed, dropped, removed): their grant and media at the SFU end."""
    if rooms is not None and rooms.active(room.org_id, room.appointment_id):
        try:
            await rooms.remove(room.org_id, room.appointment_id, member.id)
        except SfuError:
            log.exception("could not remove a participant from the visit's SFU room")


async def ended(rooms: SfuRooms | None, org_id: str, appointment_id: str) -> None:
    """The visit ended (hang-up, moved to the phone): its SFU room is destroyed."""
    if rooms is not None:
        try:
            await rooms.end(org_id, appointment_id)
        except SfuError:
            log.exception("could not destroy the visit's SFU room")


_ENDING: set[asyncio.Task[None]] = set()


def end_soon(org_id: str, appointment_id: str) -> None:
    """The visit moved to the phone (a form post, outside any socket): destroy its SFU room in the
    background, in every SFU configuration this process has used."""
    for rooms in _ROOMS.values():
        if rooms is not None and rooms.active(org_id, appointment_id):
            task = asyncio.get_running_loop().create_task(ended(rooms, org_id, appointment_id))
            _ENDING.add(task)  # held until done: the loop keeps only weak references to tasks
            task.add_done_callback(_ENDING.discard)


async def close_all() -> None:
    """Close every SFU connection this process opened (at shutdown, and between tests)."""
    rooms = [r for r in _ROOMS.values() if r is not None]
    _ROOMS.clear()
    for r in rooms:
        await r.sfu.close()
