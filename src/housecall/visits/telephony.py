"""Calling a patient by phone (docs/decisions/0025): the interface a SIP/PSTN provider sits behind.

Two things in a visit need someone to ring the patient: "Call me by phone instead" (decision 0018's
fallback, urgent) and a visit booked as a phone visit, when the clinician lets the patient in. Both
go through ``Telephony.call``. Housecall has no carrier of its own: the local implementation,
``CallbackTasks``, opens a ``callback`` Task in the clinician's pool with the number, when, and the
visit's Encounter as focus, and the clinician (or staff) dials. A provider would place the call
instead (bridging the clinician's line and the patient's number) and may still record the Task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from housecall.workspace import inbox

if TYPE_CHECKING:
    from housecall.visits.service import Visit
    from housecall.web.records import Records

FALLBACK = "fallback"  # the visit moved to the phone
PHONE_VISIT = "phone-visit"  # a visit booked as a phone visit was let in


class Telephony(Protocol):
    """Ring ``number`` for ``visit`` (the Encounter exists); returns the record of the call (a Task
    for the local implementation). ``reason`` is ``FALLBACK`` or ``PHONE_VISIT``; ``by`` who asked."""

    async def call(
        self, rec: Records, visit: Visit, number: str, *, reason: str, by: str | None
    ) -> dict[str, Any]: ...


class CallbackTasks:
    """The local implementation: a callback Task in the clinician's pool, written on the person's
    behalf (patients may not write Tasks on the API; the audit names the person)."""

    async def call(
        self, rec: Records, visit: Visit, number: str, *, reason: str, by: str | None
    ) -> dict[str, Any]:
        assert visit.encounter is not None
        writer = rec.on_behalf()
        pool = None
        if visit.practitioners:
            pools = await inbox.pools_of(writer, visit.practitioners[0].removeprefix("Practitioner/"))
            pool = pools[0] if pools else None
        start = visit.start
        at = start.strftime("%H:%M UTC %Y-%m-%d") if start else "today"
        if reason == PHONE_VISIT:
            description = f"Call {number} now for the phone visit booked at {at} (the patient was let in)."
        else:
            description = f"Call {number} now for the virtual visit booked at {at} (it moved to the phone)."
        return await inbox.open_task(
            writer, "callback", patient_id=str(visit.patient_id), focus=f"Encounter/{visit.encounter['id']}",
            pool=pool, description=description, priority="urgent", requester=by,
        )  # fmt: skip


_current: Telephony = CallbackTasks()


def current() -> Telephony:
    """The telephony in use (the local one until a provider is configured)."""
    return _current


def use(telephony: Telephony) -> Telephony:
    """Put a provider in place (at start-up, or in a test); returns the one it replaces."""
    global _current
    previous, _current = _current, telephony
    return previous
