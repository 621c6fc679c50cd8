"""Settings from ``HOUSECALL_*`` environment variables, over an optional settings file.

Precedence (highest first): environment variables, the file named by ``HOUSECALL_SETTINGS_FILE``
(``KEY=value`` lines, same names), the defaults below.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path("var") / "housecall.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HOUSECALL_",
        env_file=os.environ.get("HOUSECALL_SETTINGS_FILE") or None,
        extra="ignore",
    )

    database_url: str = Field(default=f"sqlite:///{DEFAULT_SQLITE_PATH}")
    # Request and search limits: exceeding them is a 4xx with an OperationOutcome, never a 500.
    max_body_bytes: int = 16 * 1024 * 1024
    max_bundle_entries: int = 5000
    default_count: int = 20
    max_count: int = 1000
    # Connections to PostgreSQL per process.
    pool_size: int = 10
    # `housecall check` refuses fsync/synchronous_commit off unless the operator insists.
    allow_unsafe_durability: bool = False
    # --- Audit trail and web hygiene (docs/decisions/0007) ---
    # Seconds between passes of the server's audit sealer (links new events to the hash chain).
    audit_seal_interval: float = 1.0
    # Make every request wait for its audit event's commit. Off: writes, denials and failures wait;
    # a successful read's event is committed within 5 ms of the answer (decision 0007).
    audit_wait_for_reads: bool = False
    # Run the background job worker inside `housecall serve` (the default: one process does it
    # all). Off when `housecall worker` processes do the work.
    worker_in_process: bool = True
    # Browser origins allowed to call the FHIR API cross-origin (CORS), as a JSON list:
    # HOUSECALL_CORS_ORIGINS='["https://app.example.org"]'. Registered SMART apps are added to it.
    cors_origins: list[str] = Field(default_factory=list)

    # --- Identity: sign-in, sessions, mail (docs/decisions/0005, 0006) ---
    # The address people reach Housecall at; e-mailed links are built from it, never from the
    # request's Host header (a forged Host would otherwise send reset links to an attacker's site).
    public_url: str = "http://127.0.0.1:8000"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_from: str = "Housecall <no-reply@housecall.invalid>"
    # argon2id cost (RFC 9106's second recommended option: 64 MiB, 3 passes, 4 lanes). Tests lower
    # it; a hash made with other parameters is upgraded at the account's next sign-in.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4
    # Automatic logoff (SECURITY.md row 9): staff and clinicians 30 min idle / 12 h absolute;
    # patients and proxies 30 min idle / 7 days absolute.
    staff_idle_seconds: int = 30 * 60
    staff_absolute_seconds: int = 12 * 3600
    patient_idle_seconds: int = 30 * 60
    patient_absolute_seconds: int = 7 * 24 * 3600
    # Failed sign-in attempts (password, TOTP, recovery code) allowed per hour, sliding window.
    signin_failures_per_account_hour: int = 100
    signin_failures_per_ip_hour: int = 1000

    # --- SMART authorization server (docs/decisions/0008) ---
    # Token, revoke and introspect requests per minute, counted per client and per IP address.
    smart_token_requests_per_minute: int = 120

    # --- Scheduling (docs/decisions/0014) ---
    # The clinic's time zone: slots are offered, listed and added in it (IANA name).
    clinic_timezone: str = "America/New_York"
    # Hours before a visit at which a reminder goes out, comma-separated ("24,2").
    reminder_hours: str = "24,2"
    # Patients may cancel or move a visit online until this many hours before it; later they call.
    cancel_cutoff_hours: int = 24
    # How far ahead patients see free slots.
    booking_horizon_days: int = 28
    # --- Test results in the portal (docs/decisions/0013) ---
    # Hours after a DiagnosticReport's `issued` time at which the portal shows it to the patient
    # even if no clinician has reviewed and released it yet (0: at once).
    result_release_hours: int = 72
    # --- Virtual visits (docs/decisions/0018) ---
    # TURN servers (coturn) the visit pages may relay media through, as a JSON list of URLs:
    # HOUSECALL_TURN_URLS='["turn:turn.example.org:3478?transport=udp"]'. Empty: direct (host and
    # server-reflexive) candidates only. Credentials are minted per admitted participant with the
    # TURN REST scheme from ``turn_secret`` (coturn's ``static-auth-secret``).
    turn_urls: list[str] = Field(default_factory=list)
    turn_secret: str = ""
    turn_credential_seconds: int = 10 * 60
    # Technology-check echo peers (aiortc) one process runs at once, and how long one may last.
    visit_echo_peers: int = 4
    visit_echo_seconds: int = 60
    # --- Visits through an SFU (docs/decisions/0022) ---
    # ``none``: every visit is peer to peer. ``janus``: visits with more than ``sfu_threshold``
    # people in the call go through a Janus VideoRoom reached at ``janus_url`` (its HTTP API).
    sfu: Literal["none", "janus"] = "none"
    sfu_threshold: int = 3
    # How long a participant's join grant (a per-participant token the SFU accepts) lasts.
    sfu_grant_seconds: int = 10 * 60
    # Publishers one visit's room holds (Janus refuses the next one).
    sfu_publishers: int = 12
    janus_url: str = "http://127.0.0.1:8088/janus"
    # Janus's ``api_secret`` (every request carries it) and the VideoRoom's ``admin_key`` (needed to
    # create rooms); both empty when the Janus deployment does not set them.
    janus_api_secret: str = ""
    janus_admin_key: str = ""
    # Seconds to wait for an answer from Janus, and between keepalives of our Janus sessions
    # (Janus drops a session after its ``session_timeout``, 60 s by default).
    janus_timeout_seconds: float = 10.0
    janus_keepalive_seconds: float = 25.0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
