"""Fixtures for notification tests: identity's organization-per-test environment with its real SMTP
server, a second SMTP server that can hold a conversation or refuse an address, and the settings a
worker reads (the job handler reads them from the environment, as ``housecall worker`` does)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from housecall.core import jobs
from housecall.core.db import Database
from housecall.core.settings import get_settings

# Identity's fixtures: an organization with a real SMTP server (aiosmtpd), signed-in browsers.
from tests.identity.conftest import Mailbox, _clock_back, env, smtp  # noqa: F401
from tests.support import free_port

PUBLIC_URL = "https://testserver"


def use_smtp(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """Point the job handler's settings at the SMTP server on ``port``."""
    monkeypatch.setenv("HOUSECALL_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("HOUSECALL_SMTP_PORT", str(port))
    monkeypatch.setenv("HOUSECALL_PUBLIC_URL", PUBLIC_URL)
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def worker_settings(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[None]:
    _box, port = request.getfixturevalue("smtp")
    use_smtp(monkeypatch, port)
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


async def work(db: Database, rounds: int = 20) -> int:
    """Run the job queue until nothing is due (as a worker would); returns how many jobs ran."""
    total = 0
    for _ in range(rounds):
        ran = await jobs.work_once(db)
        if not ran:
            break
        total += ran
    return total


class GatedMailbox(Mailbox):
    """A real SMTP server that can hold a sender mid-conversation (after MAIL FROM, before the
    message is given) and refuses, for good, recipients whose address starts with "nobody"."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()  # set: the next MAIL FROM waits until released
        self.held = threading.Event()  # set by the server once a sender is being held
        self.released = threading.Event()

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.hold.is_set():
            self.hold.clear()
            self.held.set()
            await asyncio.to_thread(self.released.wait, 120)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("nobody"):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture(scope="session")
def gated_smtp() -> Iterator[tuple[GatedMailbox, int]]:
    box = GatedMailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    box.released.set()
    controller.stop()
