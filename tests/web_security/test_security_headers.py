"""Security headers on every route, CORS for registered origins only, HSTS behind TLS only, no
stack traces or versions in responses, no Server banner and no health information in the logs."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.routing import Mount

from housecall import __version__
from housecall.app import create_app
from housecall.core.settings import Settings
from housecall.fhir import interactions
from housecall.web import security
from tests.conftest import _client
from tests.support import LiveServer

APP_ORIGIN = "https://app.example.org"
EVIL = "https://evil.example.net"
CANARY = "Qvxz-Canary-Health-Info-7731"
FIXED = {
    "content-security-policy": security.CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "permissions-policy": security.PERMISSIONS,
    "cross-origin-opener-policy": "same-origin",
}
PATIENT = {
    "resourceType": "Patient",
    "name": [{"family": CANARY, "given": ["Ann"]}],
    "birthDate": "1970-02-03",
}


def assert_hygiene(r: httpx.Response, *, no_store: bool = True) -> None:
    where = f"{r.request.method} {r.request.url.path} -> {r.status_code}"
    for name, value in FIXED.items():
        assert r.headers.get(name) == value, f"{name} on {where}"
    csp = r.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
    assert "server" not in r.headers and "x-powered-by" not in r.headers, where
    assert "strict-transport-security" not in r.headers, f"HSTS over plain HTTP on {where}"
    if no_store:
        assert r.headers.get("cache-control") == "no-store", where
    assert __version__ not in r.text, f"version in the body of {where}"


# Public responses that carry no health information and may be cached (their routes set a
# Cache-Control of their own): the server's description, SMART discovery, public keys, assets.
PUBLIC_CACHEABLE = (
    "/fhir/metadata", "/fhir/.well-known/", "/.well-known/", "/oauth/jwks", "/static/",
)  # fmt: skip


def routes_of(routes: list[object], prefix: str = "") -> list[tuple[str, object]]:
    """(path, route) for every route, descending into included routers and mounts."""
    out: list[tuple[str, object]] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            out += routes_of(inner.routes, prefix + route.include_context.prefix)  # type: ignore[attr-defined]
        elif isinstance(route, Mount):
            out.append((prefix + route.path + "/{path:path}", route))
        else:
            out.append((prefix + getattr(route, "path", ""), route))
    return out


def sample_paths(app: object) -> list[str]:
    """A GET request for every route that answers GET, path parameters filled in."""
    paths: list[str] = []
    for path, route in routes_of(app.routes):  # type: ignore[attr-defined]
        if isinstance(route, Mount):
            paths += [path.replace("{path:path}", p) for p in ("housecall.css", "nope.js")]
        elif "GET" not in (getattr(route, "methods", None) or ()):
            continue
        elif path == "/fhir/{path:path}":
            paths += [
                path.replace("{path:path}", p) for p in ("Patient", "Patient/nope", "_history", "metadata")
            ]
        else:
            paths.append(re.sub(r"\{[^}]+\}", "sample", path))
    return paths


async def test_every_get_route_carries_the_headers(client: httpx.AsyncClient) -> None:
    app = create_app(Settings(database_url="sqlite:///unused.db"))
    paths = sample_paths(app)
    assert {
        "/",
        "/healthz",
        "/fhir/Patient",
        "/fhir/Patient/nope",
        "/signin",
        "/static/housecall.css",
    } <= set(paths)
    crawled = 0
    for path in [*paths, "/no/such/page", "/fhir/NoSuchType/1"]:
        r = await client.get(path)
        assert r.status_code < 500, path
        public = path.startswith(PUBLIC_CACHEABLE) and r.status_code == 200
        assert_hygiene(r, no_store=not public)
        if public:
            assert "no-store" not in r.headers.get("cache-control", ""), path
        crawled += 1
    assert crawled >= 25
    # Other verbs and their errors too.
    for method, path in (("DELETE", "/healthz"), ("POST", "/fhir/Patient"), ("PUT", "/fhir/Patient/x")):
        assert_hygiene(await client.request(method, path, content=b"{"))


async def test_static_assets_are_cached_pages_are_not(client: httpx.AsyncClient) -> None:
    asset = await client.get("/static/housecall.css")
    assert asset.status_code == 200 and asset.headers["cache-control"] == security.STATIC_CACHE
    page = await client.get("/signin")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"


async def test_patient_reads_and_searches_are_never_cached(client: httpx.AsyncClient) -> None:
    created = await client.post("/fhir/Patient", json=PATIENT)
    assert created.status_code == 201
    assert_hygiene(created)
    pid = created.json()["id"]
    for path in (f"/fhir/Patient/{pid}", f"/fhir/Patient/{pid}/_history/1", f"/fhir/Patient?_id={pid}"):
        r = await client.get(path)
        assert r.status_code == 200 and CANARY in r.text
        assert_hygiene(r)
        assert r.headers["pragma"] == "no-cache"


async def test_capability_statement_names_no_software_version(client: httpx.AsyncClient) -> None:
    meta = await client.get("/fhir/metadata")
    assert "version" not in meta.json().get("software", {})
    assert __version__ not in meta.text


async def test_openapi_has_no_software_version_and_no_swagger_ui(client: httpx.AsyncClient) -> None:
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200 and spec.json()["info"]["version"] == "1"
    assert (await client.get("/api/docs")).status_code == 404


@pytest.mark.parametrize(
    ("headers", "base"),
    [
        ({"x-forwarded-proto": "https"}, "http://testserver"),
        ({"forwarded": 'for=1.2.3.4;proto="https";host=h.example'}, "http://testserver"),
        ({}, "https://testserver"),
    ],
)
async def test_hsts_only_over_tls(client: httpx.AsyncClient, headers: dict[str, str], base: str) -> None:
    r = await client.get(base + "/fhir/Patient", headers=headers)
    assert r.headers["strict-transport-security"] == security.HSTS
    plain = await client.get("/fhir/Patient", headers={"x-forwarded-proto": "http"})
    assert "strict-transport-security" not in plain.headers


@pytest.fixture
async def cors_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(database_url, cors_origins=[APP_ORIGIN]):
        yield c


async def test_cors_answers_registered_origins_only(cors_client: httpx.AsyncClient) -> None:
    ok = await cors_client.get("/fhir/Patient", headers={"origin": APP_ORIGIN})
    assert ok.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "ETag" in ok.headers["access-control-expose-headers"]
    assert "access-control-allow-credentials" not in ok.headers
    assert "Origin" in ok.headers["vary"]
    for origin in (EVIL, "null", APP_ORIGIN + ".evil.net", "http://app.example.org"):
        r = await cors_client.get("/fhir/Patient", headers={"origin": origin})
        assert "access-control-allow-origin" not in r.headers, origin
        assert "Origin" in r.headers["vary"]
        assert_hygiene(r)
    # Pages are never opened to other origins, registered or not.
    page = await cors_client.get("/healthz", headers={"origin": APP_ORIGIN})
    assert "access-control-allow-origin" not in page.headers


@pytest.mark.parametrize("path", ["/fhir/Observation", "/fhir/Patient/1", "/oauth/token"])
async def test_preflight(cors_client: httpx.AsyncClient, path: str) -> None:
    ask = {
        "access-control-request-method": "PUT",
        "access-control-request-headers": "authorization, content-type, x-evil",
    }
    ok = await cors_client.options(path, headers={"origin": APP_ORIGIN, **ask})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "PUT" in ok.headers["access-control-allow-methods"]
    assert ok.headers["access-control-allow-headers"] == "authorization, content-type"
    assert "Origin" in ok.headers["vary"]
    denied = await cors_client.options(path, headers={"origin": EVIL, **ask})
    assert denied.status_code == 403
    assert not [h for h in denied.headers if h.startswith("access-control-allow")]


async def test_registered_app_origins_come_from_the_client_registry(database_url: str) -> None:
    async for client in _client(database_url):
        asked: list[str] = []

        async def registered(origin: str) -> bool:
            asked.append(origin)
            return origin == "https://smart.example.com"

        app = client._transport.app  # type: ignore[attr-defined]
        app.state.cors_origin_check = registered
        ok = await client.get("/fhir/Patient", headers={"origin": "https://smart.example.com"})
        assert ok.headers["access-control-allow-origin"] == "https://smart.example.com"
        no = await client.get("/fhir/Patient", headers={"origin": EVIL})
        assert "access-control-allow-origin" not in no.headers
        assert asked == ["https://smart.example.com", EVIL]


async def test_forced_exceptions_answer_generically(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_read(*args: object, **kwargs: object) -> None:
        raise ValueError(f"store exploded on {CANARY}")

    monkeypatch.setattr(interactions, "read", broken_read)
    async for client in _client(database_url):
        transport = client._transport  # type: ignore[attr-defined]
        transport.raise_app_exceptions = False  # answer as a server does, instead of raising here

        async def boom() -> None:
            raise RuntimeError(f"secret detail {CANARY} at /srv/housecall/x.py line 12")

        transport.app.add_api_route("/boom", boom)
        for path in ("/boom", "/fhir/Patient/anything"):
            r = await client.get(path)
            assert r.status_code == 500, path
            for leak in (CANARY, "Traceback", "RuntimeError", "ValueError", ".py", __version__, "uvicorn"):
                assert leak not in r.text, (path, leak)
            assert_hygiene(r)


def test_live_server_sends_no_banner_and_logs_no_health_information(database_url: str) -> None:
    server = LiveServer(database_url).start()
    try:
        auth = server.auth_headers()
        with httpx.Client(base_url=server.base, headers=auth) as http:
            r = http.get(f"/fhir/Patient?name={CANARY}&birthdate=1970-02-03")
            assert r.status_code == 200
            assert "server" not in r.headers and "date" in r.headers
            assert_hygiene(r)
            created = http.post("/fhir/Patient", json=PATIENT)
            assert created.status_code == 201
            pid = created.json()["id"]
            http.get(f"/fhir/Patient/{pid}?_elements={CANARY}")
            http.post(
                "/fhir/Patient", content=b'{"resourceType": "Patient", "name": "' + CANARY.encode() + b'"}'
            )
            http.post("/fhir/Observation", json={"resourceType": "Observation", "note": CANARY})
            http.get(f"/fhir/Patient/{CANARY}")
            http.get(f"/no-such-page?q={CANARY}")
            http.get(f"/fhir/Patient?name={CANARY}", headers={"Authorization": f"Bearer {CANARY}"})
    finally:
        server.stop()
    assert server.proc is not None and server.proc.stderr is not None
    logs = server.proc.stderr.read().decode()
    assert "Application startup complete" in logs  # the server's log was captured
    for secret in (CANARY, "1970-02-03", auth["Authorization"].split()[1]):
        assert secret not in logs
