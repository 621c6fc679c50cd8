"""TURN credentials for the visit pages: the "TURN REST" scheme coturn checks with its
``static-auth-secret`` (``use-auth-secret``), so no account is stored on the TURN server.

- username ``<expiry unix seconds>:<opaque participant id>``;
- password ``base64(HMAC-SHA1(secret, username))``.

coturn refuses an allocation once the expiry has passed. The opaque id is random per connection
(never a patient or account id), so the TURN server's logs name nobody. Credentials are minted only
for a participant the visit's signaling has admitted (``visits/signal.py``) or for the signed-in
person's own technology check; nobody else gets a way through our relay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from housecall.core.settings import Settings


@dataclass(frozen=True)
class Credential:
    urls: tuple[str, ...]
    username: str
    password: str
    expires: int  # unix seconds

    def ice_server(self) -> dict[str, Any]:
        """The RTCIceServer dictionary a browser (or aiortc) takes."""
        return {"urls": list(self.urls), "username": self.username, "credential": self.password}


def password_for(secret: str, username: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def mint(
    secret: str, urls: list[str] | tuple[str, ...], participant: str, *, ttl: int, now: float
) -> Credential:
    """A credential for ``participant`` (an opaque id without ``:``) valid ``ttl`` seconds from ``now``."""
    if not secret:
        raise ValueError("no TURN secret configured")
    if ":" in participant or not participant:
        raise ValueError("the participant id must be opaque and free of ':'")
    expires = int(now) + ttl
    username = f"{expires}:{participant}"
    return Credential(tuple(urls), username, password_for(secret, username), expires)


def ice_servers(
    settings: Settings, participant: str, *, now: float
) -> tuple[list[dict[str, Any]], int | None]:
    """(the iceServers list, when the credential expires) for one participant; an empty list when
    no TURN server is configured (calls then use direct candidates only)."""
    if not settings.turn_urls or not settings.turn_secret:
        return [], None
    cred = mint(
        settings.turn_secret, settings.turn_urls, participant, ttl=settings.turn_credential_seconds, now=now
    )
    return [cred.ice_server()], cred.expires
