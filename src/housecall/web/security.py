"""Security headers, CORS for registered apps, and no server banner: one pure ASGI middleware.

Installed outermost (outside Starlette's error middleware), so every response gets the headers -
a 500 as much as a 200. Pure ASGI rather than ``BaseHTTPMiddleware``: the latter costs a task and
a memory stream per request and breaks streaming responses.

Choices (SECURITY.md row 21):
- CSP without 'unsafe-inline' or any remote origin: pages ship their scripts and styles as files.
- ``Referrer-Policy: same-origin``: nothing (not even the origin) leaves for another site, and
  unlike ``no-referrer`` the browser still sends ``Origin`` on same-origin form posts, which CSRF
  checks may rely on.
- ``Cache-Control: no-store`` by default: FHIR responses always (except the CapabilityStatement);
  any other response unless its route set its own Cache-Control (public pages) or it is a static
  asset (a long cache).
- HSTS only when the request came over TLS, directly or as a proxy reports it (``Forwarded:
  proto=https`` / ``X-Forwarded-Proto``, as ``fhir.api.base_url`` reads them). Believing a spoofed
  header is harmless here: browsers ignore HSTS received over plain HTTP.
- CORS: an ``Origin`` is echoed only when it is registered (the settings list, or the async check
  the OAuth client registry installs as ``app.state.cors_origin_check``); never ``*``, never
  credentials (apps send bearer tokens, and cookies must not ride along cross-origin).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

OriginCheck = Callable[[str], Awaitable[bool]]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; media-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'"
)
# Video visits need the camera and microphone of our own pages; nothing else.
PERMISSIONS = (
    "camera=(self), microphone=(self), fullscreen=(self), display-capture=(), geolocation=(), "
    "payment=(), usb=(), serial=(), bluetooth=(), midi=()"
)
HSTS = "max-age=63072000; includeSubDomains"
NO_STORE = "no-store"
STATIC_CACHE = "public, max-age=604800"
# Paths that answer cross-origin requests from registered apps: the FHIR API and the OAuth/SMART
# endpoints an app calls from a browser (token, introspection, revocation, discovery).
CORS_PREFIXES = ("/fhir", "/oauth", "/auth/token", "/.well-known/")
CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
CORS_REQUEST_HEADERS = frozenset(
    [
        "authorization",
        "content-type",
        "accept",
        "accept-language",
        "if-match",
        "if-none-match",
        "if-none-exist",
        "if-modified-since",
        "prefer",
        "x-requested-with",
    ]
)
CORS_EXPOSE = "Location, ETag, Last-Modified, Content-Location"
# Under /fhir only the server's own description may be cached (it never holds data).
CACHEABLE = (
    "/fhir/metadata",
    "/fhir/.well-known/smart-configuration",
    "/fhir/.well-known/openid-configuration",
)
STATIC_PREFIXES = ("/static/",)

_FIXED: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"permissions-policy", PERMISSIONS.encode()),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def came_over_tls(scope: Scope) -> bool:
    if scope.get("scheme") in ("https", "wss"):
        return True
    for name, value in scope.get("headers", ()):
        if name == b"forwarded":
            first = value.decode("latin-1").split(",")[0]
            for pair in first.split(";"):
                key, _, val = pair.strip().partition("=")
                if key.lower() == "proto":
                    return val.strip('"').lower() == "https"
        elif name == b"x-forwarded-proto":
            return value.decode("latin-1").split(",")[0].strip().lower() == "https"
    return False


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def _is_cors_path(path: str) -> bool:
    for prefix in CORS_PREFIXES:
        if prefix.endswith("/"):
            if path.startswith(prefix):
                return True
        elif path == prefix or path.startswith(prefix + "/"):
            return True
    return False


def cache_policy(path: str, status: int) -> tuple[str | None, bool]:
    """(Cache-Control to use, whether it overrides one the route set)."""
    if path == "/fhir" or path.startswith("/fhir/"):
        return (None, False) if path in CACHEABLE else (NO_STORE, True)
    if path.startswith(STATIC_PREFIXES) and status in (200, 304):
        return STATIC_CACHE, False
    return NO_STORE, False


class SecurityHeaders:
    def __init__(
        self,
        app: ASGIApp,
        *,
        cors_origins: Iterable[str] = (),
        origin_check: Callable[[], OriginCheck | None] = lambda: None,
    ) -> None:
        self.app = app
        self.cors_origins = frozenset(o.rstrip("/").lower() for o in cors_origins)
        self.origin_check = origin_check

    async def allowed(self, origin: str) -> bool:
        origin = origin.rstrip("/").lower()
        if origin == "null" or "://" not in origin:
            return False
        if origin in self.cors_origins:
            return True
        check = self.origin_check()
        return bool(check is not None and await check(origin))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        cors = _is_cors_path(path)
        origin = _header(scope, b"origin") if cors else None
        allowed = origin is not None and await self.allowed(origin)
        if cors and method == "OPTIONS" and origin and _header(scope, b"access-control-request-method"):
            await self._preflight(scope, send, origin if allowed else None)
            return
        tls = came_over_tls(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                cache, force_cache = cache_policy(path, message["status"])
                headers: list[tuple[bytes, bytes]] = [
                    (k, v)
                    for k, v in message.get("headers", ())
                    if k.lower() not in (b"server", b"x-powered-by")
                ]
                present = {k.lower() for k, _ in headers}
                for name, value in _FIXED:
                    if name not in present:
                        headers.append((name, value))
                if tls:
                    headers.append((b"strict-transport-security", HSTS.encode()))
                if cache is not None and (force_cache or b"cache-control" not in present):
                    headers = [(k, v) for k, v in headers if k.lower() not in (b"cache-control", b"expires")]
                    headers.append((b"cache-control", cache.encode()))
                    if cache == NO_STORE:
                        headers.append((b"pragma", b"no-cache"))
                if cors:
                    headers.append((b"vary", b"Origin"))
                    if allowed and origin is not None:
                        headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
                        headers.append((b"access-control-expose-headers", CORS_EXPOSE.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _preflight(self, scope: Scope, send: Send, origin: str | None) -> None:
        """Answer a CORS preflight ourselves: 204 with the grants for a registered origin, 403
        with none for any other (the browser then refuses the real request)."""
        headers: list[tuple[bytes, bytes]] = [
            (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
            (b"cache-control", NO_STORE.encode()),
            (b"content-length", b"0"),
            *_FIXED,
        ]
        status = 403
        if origin is not None:
            status = 204
            asked = _header(scope, b"access-control-request-headers") or ""
            granted = [h.strip() for h in asked.split(",") if h.strip().lower() in CORS_REQUEST_HEADERS]
            headers += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", CORS_METHODS.encode()),
                (b"access-control-max-age", b"600"),
            ]
            if granted:
                headers.append((b"access-control-allow-headers", ", ".join(granted).encode("latin-1")))
        if came_over_tls(scope):
            headers.append((b"strict-transport-security", HSTS.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def install(app: Any, cors_origins: Iterable[str] = ()) -> None:
    """Wrap ``app``'s whole middleware stack (so even Starlette's own 500 passes through us).

    The OAuth client registry may set ``app.state.cors_origin_check`` to an async
    ``(origin) -> bool``; it is read on each cross-origin request.
    """
    build = app.build_middleware_stack

    def build_with_headers() -> ASGIApp:
        return SecurityHeaders(
            build(),
            cors_origins=cors_origins,
            origin_check=lambda: getattr(app.state, "cors_origin_check", None),
        )

    app.build_middleware_stack = build_with_headers
