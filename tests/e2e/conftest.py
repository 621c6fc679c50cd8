"""Browser tests: a live ``housecall serve`` and Debian's Chromium driven by Playwright.

``server`` serves the test's database on 127.0.0.1 with the test's SMTP server and cheap password
hashing; a test module adds settings by overriding ``server_env``. ``browser`` is Chromium from
``/usr/bin/chromium`` (Playwright cannot download browsers here). The page walk uses the small
clinic of ``tests/clinic.py``.
"""

from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser, async_playwright

from tests.clinic import clinic  # noqa: F401
from tests.identity.conftest import Mailbox, _clock_back, env, smtp  # noqa: F401
from tests.support import LiveServer, free_port


def server_settings(port: int, smtp_port: int) -> dict[str, str]:
    """The environment of a live test server: its own address, the test's SMTP server, and argon2
    parameters that make signing in cheap."""
    return {
        "HOUSECALL_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "HOUSECALL_SMTP_PORT": str(smtp_port),
        "HOUSECALL_ARGON2_TIME_COST": "1",
        "HOUSECALL_ARGON2_MEMORY_KIB": "1024",
        "HOUSECALL_ARGON2_PARALLELISM": "1",
    }


@pytest.fixture
def server_env() -> dict[str, str]:
    """More settings for the live server (a test module overrides this fixture)."""
    return {}


@pytest.fixture
def server(database_url: str, smtp: tuple[Mailbox, int], server_env: dict[str, str]) -> Iterator[LiveServer]:  # noqa: F811
    port = free_port()
    live = LiveServer(
        database_url, port=port, extra_env={**server_settings(port, smtp[1]), **server_env}
    ).start()
    yield live
    live.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        yield b
        await b.close()
