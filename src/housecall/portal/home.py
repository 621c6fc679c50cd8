"""What the portal's home page shows: what needs the patient's attention.

Each feature registers a provider that, given the patient's ``Records``, returns the few lines it
wants on the home page (unread messages, upcoming visits with their join button, new results, open
refill requests, the balance due). The home page asks every provider in the order registered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from housecall.web.records import Records


@dataclass(frozen=True)
class Attention:
    """One line on the home page: already translated, with where to go."""

    text: str
    path: str
    count: int = 0
    action: str | None = None  # a button label ("Join", "Check in", "Pay") instead of a plain link
    urgent: bool = False


Provider = Callable[[Records, str], Awaitable[list[Attention]]]  # (records, patient id)
PROVIDERS: list[Provider] = []


def provider(fn: Provider) -> Provider:
    """Register a home-page provider (a feature module does this at import)."""
    if fn not in PROVIDERS:
        PROVIDERS.append(fn)
    return fn


async def attention(rec: Records, patient_id: str) -> list[Attention]:
    out: list[Attention] = []
    for fn in PROVIDERS:
        out += await fn(rec, patient_id)
    return out
