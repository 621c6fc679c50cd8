"""The scheduling pages, installed by the application (importing them registers the reminder job)."""

from __future__ import annotations

from fastapi import FastAPI

from housecall.scheduling import portal, staff


def install(app: FastAPI) -> None:
    app.include_router(portal.router)
    app.include_router(staff.router)
