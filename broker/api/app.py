"""The API and dashboard as one ASGI app: REST under /api (OpenAPI at /docs, after logging in), pages, the live
stream, /metrics (a bearer token, or loopback only).

The caller owns the store and the MQTT connection (``hallfleet api`` opens both, tests pass their own); the
app only reads ``app.state.mqtt`` when a command is issued, so a supervisor may replace a lost connection.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import fastapi_offline
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.alerts.routing import Router
from broker.api import clocking, device_page, hall_views, metrics, overview, pages, queue_view, routes, store_health
from broker.api.auth import User, current_user
from broker.api.config import ApiConfig
from broker.api.i18n import language, words
from broker.api.limits import BodyLimit
from broker.api.readonly import HallReadOnly
from broker.api.throttle import LoginThrottle
from broker.sites import Sites
from broker.store.db import Store
from runtime.clock import Clock, SystemClock
from runtime.transport import AsyncMqtt

DOCS_STATIC = "/docs/static"


def create_app(cfg: ApiConfig, store: Store, mqtt: AsyncMqtt | None, clock: Clock | None = None) -> FastAPI:
    # /docs and /openapi.json are ours (below), behind the login: the schema maps every route and field.
    app = FastAPI(
        title="hallfleet",
        description="Devices, incidents, commands, consumables, attendance and ratings of the government service halls",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.cfg = cfg
    app.state.store = store
    app.state.mqtt = mqtt
    app.state.clock = clock or SystemClock()
    app.state.sites = Sites(cfg.centre_or_default.sites)
    app.state.ack_secret = cfg.centre_or_default.alerts.ack_secret()
    centre = cfg.centre_or_default
    app.state.router = Router(centre.alerts, {name: s.name for name, s in centre.sites.items() if s.name})
    app.state.throttle = LoginThrottle(cfg.login_max_failures, cfg.login_lockout_s, cfg.login_source_max_failures)
    app.state.metrics_token = cfg.metrics_token()
    app.state.streams = {}  # user name -> live streams open (broker/api/live.py)
    redact_ack_tokens()
    app.include_router(routes.router)
    app.include_router(overview.router)
    app.include_router(device_page.router)
    app.include_router(clocking.router)
    app.include_router(hall_views.router)
    app.include_router(queue_view.router)  # the queue page (排队叫号) and its stream
    app.include_router(queue_view.api_router)  # its monthly report
    app.include_router(pages.router)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        metrics_allowed(request)
        return Response(await metrics.fleet_metrics(store, app.state.throttle), media_type=metrics.CONTENT_TYPE)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(user: Annotated[User, Depends(current_user)]) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(user: Annotated[User, Depends(current_user)]) -> HTMLResponse:
        return docs_page()

    # Swagger UI's own files, served from the fastapi-offline package: the halls' intranets reach no CDN.
    app.mount(DOCS_STATIC, StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), name="docs-static")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        m = app.state.mqtt
        return {"store": "ok", "mqtt": "connected" if m is not None and m.is_connected else "down"}

    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # The store away: 503 with the banner, not a 500 with a traceback (broker/api/store_health.py).
    for unavailable in (SQLAlchemyError, OSError):
        app.add_exception_handler(unavailable, store_health.store_unreachable)
    app.add_middleware(store_health.StoreBanner, store=store, clock=app.state.clock)
    app.add_middleware(SecurityHeaders)
    if centre.role == "hall":  # the hall's local dashboard: reads only (broker/api/readonly.py)
        app.add_middleware(HallReadOnly)
    # Outermost: the body is bounded before any other layer or route reads a byte of it.
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    return app


def docs_page() -> HTMLResponse:
    """Swagger UI with a CSP like the dashboard's: its one inline script carries a nonce, everything else comes
    from this server, so an injected script (a description in the schema, say) does not run."""
    nonce = secrets.token_urlsafe(12)
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="hallfleet API",
        swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
    )
    html = bytes(page.body).decode().replace("<script>", f'<script nonce="{nonce}">')
    csp = (
        f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline';"
        " img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": csp})


_ACK_PATH = re.compile(r"(/ack/)[^\s?\"]+")


class _AckTokenRedaction(logging.Filter):
    """An /ack/{token} link is a credential: the access log keeps the path with the token cut out."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_ACK_PATH.sub(r"\1[token]", a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_ack_tokens() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _AckTokenRedaction) for f in access.filters):
        access.addFilter(_AckTokenRedaction())


LOOPBACK = frozenset({"127.0.0.1", "::1"})
FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip")


def metrics_allowed(request: Request) -> None:
    """/metrics counts devices and incidents per hall: not for the world, and Prometheus cannot log in.

    With ``metrics_token_file`` set, the scrape must send ``Authorization: Bearer TOKEN`` (Prometheus's
    ``authorization`` setting), which works through the TLS proxy. Without it, only a scraper on this host reaching
    uvicorn directly is answered: the API listens on loopback behind a proxy, so a request the proxy forwarded
    (it comes from 127.0.0.1 too, but carries X-Forwarded-For / Forwarded) is refused. An API listening beyond
    loopback answers only the token: there a port forward (a container's, say) makes remote scrapers look local."""
    token = request.app.state.metrics_token
    if token is None and request.app.state.cfg.listens_beyond_loopback:
        raise HTTPException(403, f"metrics: set metrics_token_file (the API listens on {request.app.state.cfg.listen})")
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(401, "metrics: send Authorization: Bearer TOKEN (metrics_token_file)")
        return
    host = request.client.host if request.client else ""
    if host not in LOOPBACK or any(h in request.headers for h in FORWARDED):
        raise HTTPException(403, "metrics: loopback only (set metrics_token_file to scrape through the proxy)")


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return not path.startswith(("/api/", "/metrics", "/events/")) and "text/html" in request.headers.get("accept", "")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 401 and _wants_html(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    if exc.status_code == 403 and _wants_html(request):
        t = words(language(request))
        return pages.render(request, "forbidden.html", 403, user=None, message=f"{t['forbidden']}: {exc.detail}")
    headers = dict(exc.headers or {})
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """422 naming each field that failed (``fields``), beside FastAPI's usual ``detail`` list."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    detail = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in errors]
    fields = [".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]) for e in errors]
    return JSONResponse({"detail": detail, "fields": fields}, status_code=422)


_NO_STORE = (b"cache-control", b"no-store")


class SecurityHeaders:
    """Plain ASGI (not BaseHTTPMiddleware, which would buffer the event stream and hide disconnects)."""

    HEADERS = (
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        # /ack/{token} links carry a credential in the path: never leak it to another site as a Referer.
        # (Not no-referrer: then browsers send "Origin: null" on our own forms and the Origin check refuses them.)
        (b"referrer-policy", b"same-origin"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # Pages, JSON and downloads carry personal data or secrets (a generated password, a session token):
        # nothing of ours is for a shared cache or the browser's disk, except Swagger UI's own files.
        cacheable = scope["path"].startswith(DOCS_STATIC + "/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if cacheable or k.lower() != b"cache-control"]
                message["headers"] = headers + list(self.HEADERS) + ([] if cacheable else [_NO_STORE])
            await send(message)

        await self.app(scope, receive, with_headers)
