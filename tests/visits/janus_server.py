"""A test Janus (Debian's package) with a configuration written into a temporary directory: only
the VideoRoom plugin and the HTTP transport on 127.0.0.1, an API secret, a VideoRoom admin key.

libnice (Janus's ICE) skips loopback interfaces, so a Janus that must carry media is started inside
a network namespace with an extra interface and ``ice_enforce_list`` naming it (see
``tests/visits/sfu_netns.py`` and docs/VIDEO.md). A Janus only asked to manage rooms needs no
interface and runs beside the tests on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

JANUS = Path("/usr/bin/janus")
LIBS = Path("/usr/lib/x86_64-linux-gnu/janus")
PLUGINS = ("audiobridge", "duktape", "echotest", "lua", "nosip", "recordplay", "sip", "streaming", "textroom",
           "videocall", "voicemail")  # fmt: skip
TRANSPORTS = ("mqtt", "nanomsg", "pfunix", "rabbitmq", "websockets")


@dataclass(frozen=True)
class Janus:
    url: str
    api_secret: str
    admin_key: str
    log: Path


def write_config(
    work: Path, *, port: int, interface: str | None, rtp_low: int, session_timeout: int
) -> tuple[str, str]:
    """Janus's three configuration files in ``work``; returns (api secret, admin key)."""
    api_secret, admin_key = secrets.token_hex(12), secrets.token_hex(12)
    disable_plugins = ",".join(f"libjanus_{p}.so" for p in PLUGINS)
    disable_transports = ",".join(f"libjanus_{t}.so" for t in TRANSPORTS)
    nat = f'ice_enforce_list = "{interface}"' if interface else 'ice_ignore_list = "vmnet"'
    (work / "janus.jcfg").write_text(f"""
general: {{
    configs_folder = "{work}"
    plugins_folder = "{LIBS / "plugins"}"
    transports_folder = "{LIBS / "transports"}"
    events_folder = "{LIBS / "events"}"
    loggers_folder = "{LIBS / "loggers"}"
    log_to_stdout = false
    log_to_file = "{work / "janus.log"}"
    debug_level = 4
    admin_secret = "{secrets.token_hex(12)}"
    api_secret = "{api_secret}"
    session_timeout = {session_timeout}
}}
media: {{ rtp_port_range = "{rtp_low}-{rtp_low + 99}" }}
nat: {{ {nat} }}
plugins: {{ disable = "{disable_plugins}" }}
transports: {{ disable = "{disable_transports}" }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
events: {{ broadcast = false }}
""")
    (work / "janus.transport.http.jcfg").write_text(f"""
general: {{ json = "plain" base_path = "/janus" http = true port = {port} ip = "127.0.0.1" https = false }}
admin: {{ admin_http = false }}
""")
    (work / "janus.plugin.videoroom.jcfg").write_text(f'general: {{ admin_key = "{admin_key}" }}\n')
    return api_secret, admin_key


@contextlib.contextmanager
def running(
    work: Path, *, port: int, interface: str | None = None, rtp_low: int = 20000, session_timeout: int = 60
) -> Iterator[Janus]:
    """Janus with a fresh configuration in ``work``, until the block ends (then stopped)."""
    api_secret, admin_key = write_config(
        work, port=port, interface=interface, rtp_low=rtp_low, session_timeout=session_timeout
    )
    url = f"http://127.0.0.1:{port}/janus"
    out = (work / "janus.out").open("wb")
    proc = subprocess.Popen(
        [str(JANUS), "-C", str(work / "janus.jcfg"), "-F", str(work)], stdout=out, stderr=out
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Janus exited: {(work / 'janus.out').read_text()[-2000:]}")
            try:
                httpx.get(f"{url}/info", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("Janus did not start") from None
                time.sleep(0.1)
        yield Janus(url, api_secret, admin_key, work / "janus.log")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
