"""Virtual visits (issue 5): check-in with licensure, a server-enforced waiting room on the visit's
signaling WebSocket, TURN credentials for admitted participants, the visit page, the technology
check with an echo peer, and the phone fallback (docs/decisions/0018)."""
