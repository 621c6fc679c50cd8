"""Rendering pages: one Jinja environment (autoescaped, gettext), the layout, static files.

Pages carry no inline script or style (the CSP forbids ``unsafe-inline``); CSS is served from
``/static``. ``render`` adds what every page needs: the CSRF field, the signed-in account, the
language, and ``Cache-Control: no-store`` (pages show who is signed in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from housecall.identity import service
from housecall.identity.sessions import safe_next
from housecall.web import csrf, i18n, nav

HERE = Path(__file__).resolve().parent

env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
    extensions=["jinja2.ext.i18n"],
    trim_blocks=True,
    lstrip_blocks=True,
)
env.install_gettext_callables(i18n._, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
env.filters["date"] = i18n.date_text
env.filters["datetime"] = i18n.datetime_text
env.filters["time"] = i18n.time_text
env.filters["relationship"] = service.relationship_name


class FormErrors(dict[str, str]):
    """Field name -> message, in the order found; ``summary`` lists them for the error box."""

    def add(self, field: str, message: str) -> None:
        self.setdefault(field, message)


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    token = csrf.csrf_token(request)
    state = getattr(request.state, "hc_session", None)
    context.setdefault("errors", FormErrors())
    context.setdefault("values", {})
    context.setdefault("notice", None)
    context.setdefault("next", "/")
    current = state.account if state is not None and state.stage == "full" else None
    html = env.get_template(template).render(
        request=request,
        lang=i18n.current(),
        ui_languages=i18n.LANGUAGES,
        nav=nav.links_for(current, request.url.path),
        home=nav.home_for(current),
        current=current,
        csrf_field=lambda: Markup('<input type="hidden" name="csrf" value="{}">').format(token),
        csrf_token=token,
        **context,
    )
    response = HTMLResponse(html, status_code=status, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    csrf.set_pre_cookie(request, response)
    return response


def install_static(app: FastAPI) -> None:
    # Public: stylesheets, scripts installed by the build (htmx), icons; no data.
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)


router = APIRouter(dependencies=[Depends(csrf.csrf_guard)], include_in_schema=False)


@router.post("/language")
async def choose_language(request: Request) -> Response:
    # Public: remembers the reader's language in a cookie (no data); CSRF-checked.
    form = await request.form()
    lang = form.get("lang")
    back = form.get("next")
    response = RedirectResponse(safe_next(back if isinstance(back, str) else None, "/"), status_code=303)
    if isinstance(lang, str):
        i18n.remember(response, lang)
    return response
