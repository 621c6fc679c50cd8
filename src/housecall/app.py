"""The ASGI application: FastAPI over the resource store, one database per process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from housecall.access import breakglass
from housecall.access import views as access_views
from housecall.audit import chain, logsafe, trail
from housecall.billing import views as billing_views
from housecall.core import jobs, runtime
from housecall.core.db import open_database
from housecall.core.settings import Settings, get_settings
from housecall.fhir import api as fhir_api
from housecall.identity import sessions
from housecall.identity import views as identity_views
from housecall.messaging import views as messaging_views
from housecall.notify import views as notify_views
from housecall.portal import record as portal_record
from housecall.portal import views as portal_views
from housecall.refills import views as refills_views
from housecall.results import views as results_views
from housecall.scheduling import views as scheduling_views
from housecall.smart import admin as smart_admin
from housecall.smart import tokens as smart_tokens
from housecall.smart import views as smart_views
from housecall.visits import after_views as visits_after
from housecall.visits import forms_views as visits_forms
from housecall.visits import views as visits_views
from housecall.web import i18n, nav, security
from housecall.workspace import chart as workspace_chart
from housecall.workspace import views as workspace_views


def create_app(settings: Settings | None = None, *, tune_gc: bool = False) -> FastAPI:
    """The app; ``tune_gc`` (the serving process, ``create_served_app``) also tunes the garbage
    collector for a long-running server once everything has started (core/runtime.py)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = open_database(settings.database_url, pool_size=settings.pool_size)
        await db.connect()
        app.state.db = db
        app.state.live_tokens = await smart_tokens.watch_tokens(db)
        sealer = chain.Sealer(db, settings.audit_seal_interval)
        sealer.start()
        closer = asyncio.get_running_loop().create_task(breakglass.close_expired_periodically(db))
        stop_worker = asyncio.Event()
        worker = (
            asyncio.get_running_loop().create_task(jobs.work_forever(db, stop=stop_worker, settings=settings))
            if settings.worker_in_process
            else None
        )
        if tune_gc:
            runtime.tune_gc()
        try:
            yield
        finally:
            stop_worker.set()
            if worker is not None:
                await worker
            closer.cancel()
            await visits_views.shutdown(app)  # echo calls of technology checks still open
            await trail.sink_for(app.state).close()  # events still queued, then their seals
            await sealer.stop()
            await smart_tokens.unwatch_tokens(app.state.live_tokens)
            await db.close()

    # No software version in any response (SECURITY.md row 27): OpenAPI's required info.version
    # names the API's version. No Swagger UI: it runs inline script from a CDN, which the CSP
    # forbids; /openapi.json serves the description to any tool.
    app = FastAPI(title="Housecall", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    fhir_api.install(app)
    identity_views.install(app)  # sign-in, MFA, sessions, account pages (+ /static)
    access_views.install(app)  # emergency (break-glass) access
    smart_views.install(app)  # SMART on FHIR authorization server (docs/decisions/0008)
    smart_admin.install(app)  # the organization admin's apps page
    portal_views.install(app)  # the patient portal
    scheduling_views.install(app)  # appointments: booking, schedules, reminders (decision 0014)
    messaging_views.install(app)  # secure messaging (portal and workspace)
    billing_views.install(app)  # bills: statements, card payments, receipts
    portal_record.install(app)  # the health record summary and visit documents (PDF)
    workspace_chart.install(app)  # the clinician's patient list and chart
    refills_views.install(app)  # prescription refills (docs/decisions/0013)
    results_views.install(app)  # test results, released to the patient (docs/decisions/0013)
    workspace_views.install(app)  # the care team's workspace
    notify_views.install(app)  # notification choices, the staff outbox (docs/decisions/0011)
    visits_forms.install(app)  # before a visit: forms sent ahead, intake answers, join help (0020)
    visits_views.install(app)  # virtual visits: check-in, waiting room, signaling, tech check (0018)
    visits_after.install(app)  # after the visit: note, summary, follow-up, rating (0019)
    security.install(app, settings.cors_origins)
    app.add_middleware(i18n.LanguageMiddleware)
    logsafe.install()

    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> Response:
        # Public: a redirect only - to the signed-in person's start page, else to sign-in.
        account = await sessions.signed_in(request)
        return RedirectResponse(nav.home_for(account) if account is not None else "/signin", status_code=303)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        # Public: liveness only, no data.
        return {"status": "ok"}

    return app


def create_served_app() -> FastAPI:
    """``housecall serve``'s app factory (each worker process calls it)."""
    return create_app(tune_gc=True)
