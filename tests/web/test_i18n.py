"""English and Spanish: every string marked for translation has Spanish, the Spanish keeps the
English's placeholders, and a reader who chose Spanish gets Spanish pages (``<html lang="es">``)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from housecall.identity.passwords import MIN_LENGTH, password_problem
from housecall.web import i18n
from housecall.web.i18n import Msg
from tests.clinic import Clinic, text_of
from tests.identity.conftest import Env

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def _tool() -> ModuleType:
    """tools/i18n.py, loaded in-process (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("housecall_i18n_tool", ROOT / "tools" / "i18n.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return _tool()


def test_every_marked_string_has_spanish(tool: ModuleType) -> None:
    extracted = [m.id for m in tool.extracted() if m.id]
    assert len(extracted) > 250  # the extraction found the pages' strings (templates and Python)
    assert "Sign in" in extracted and "The e-mail address or password is not right." in extracted
    assert tool.missing() == [], "run tools/i18n.py AREA and write the Spanish"
    assert tool.duplicates() == [], "a string is translated in one catalog file only"


def test_the_spanish_keeps_every_placeholder_of_the_english(tool: ModuleType) -> None:
    checked = 0
    problems = []
    for path in sorted(tool.LOCALE.glob("*.po")):
        for message in tool.read(path):
            if not message.id or not message.string:
                continue
            ids = message.id if isinstance(message.id, tuple | list) else (message.id,)
            strings = message.string if isinstance(message.string, tuple | list) else (message.string,)
            wanted = set().union(*(PLACEHOLDER.findall(i) for i in ids))
            for text in strings:
                have = set(PLACEHOLDER.findall(text))
                if wanted - have or have - wanted:
                    problems.append(f"{path.name}: {ids[0]!r} -> {text!r}")
            checked += bool(wanted)
    assert checked >= 20
    assert not problems, "\n".join(problems)


def test_a_deferred_message_is_english_until_shown_and_then_in_the_readers_language() -> None:
    problem = password_problem("short")
    assert problem == f"Use at least {MIN_LENGTH} characters."  # logs, the CLI and the API see English
    assert isinstance(problem, Msg)
    try:
        i18n.use("es")
        assert i18n._(problem) == f"Use al menos {MIN_LENGTH} caracteres."
        assert i18n._("Sign in") == "Iniciar sesión"
    finally:
        i18n.use("en")
    assert i18n._(problem) == f"Use at least {MIN_LENGTH} characters."
    assert i18n.translate("es", problem) == f"Use al menos {MIN_LENGTH} caracteres."
    assert str(problem) == problem and type(str(problem)) is str  # plain text for JSON and FHIR


async def test_the_sign_in_page_in_spanish_by_cookie(env: Env) -> None:
    browser = env.client()
    english = await browser.get("/signin")
    assert '<html lang="en">' in english.text and "Sign in" in text_of(english.text)
    browser.cookies.set(i18n.COOKIE, "es")
    page = await browser.get("/signin")
    assert page.status_code == 200
    assert '<html lang="es">' in page.text
    words = text_of(page.text)
    assert "Iniciar sesión" in words and "Correo electrónico" in words and "¿Olvidó su contraseña?" in words
    assert "Forgot your password?" not in words
    # The language buttons name each language in that language, marked with its lang.
    assert 'lang="en"' in page.text and 'lang="es"' in page.text and "Español" in words
    # An error made in the service layer is shown in the reader's language.
    account = await env.account("patient")
    wrong = await env.post(
        browser, "/signin", {"email": account.email, "password": "not the password at all"}
    )
    assert wrong.status_code == 400
    assert "El correo electrónico o la contraseña no son correctos." in text_of(wrong.text)


async def test_choosing_spanish_in_the_footer_sets_the_cookie_and_the_next_pages_follow(
    clinic: Clinic,
) -> None:
    patient = clinic.browsers["patient"]
    r = await clinic.form_post("patient", "/language", {"lang": "es", "next": "/portal"}, form_from="/portal")
    assert r.status_code == 303 and r.headers["location"] == "/portal"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{i18n.COOKIE}=es") and "Max-Age=31536000" in cookie
    home = await patient.get("/portal")
    assert '<html lang="es">' in home.text
    words = text_of(home.text)
    assert "Hola, Ana Reyes" in words and "Requiere su atención" in words and "Inicio" in words
    account = text_of((await patient.get("/account")).text)
    assert "Su cuenta" in account and "Función Paciente" in account
    r = await clinic.form_post(
        "patient", "/language", {"lang": "en", "next": "/account"}, form_from="/account"
    )
    assert "Your account" in text_of((await patient.get("/account")).text)


async def test_the_inbox_and_the_consent_words_in_spanish(clinic: Clinic) -> None:
    nurse = clinic.browsers["nurse"]
    nurse.cookies.set(i18n.COOKIE, "es")
    words = text_of((await nurse.get("/workspace")).text)
    assert "Bandeja de entrada" in words and "Tipo de trabajo" in words and "Solicitud de renovación" in words
    from housecall.smart import scopes

    try:
        i18n.use("es")
        assert (
            scopes.describe("patient/Observation.rs")
            == "Leer y buscar registros de observation en el expediente de este paciente"
        )
    finally:
        i18n.use("en")
    assert (
        scopes.describe("patient/Observation.rs")
        == "Read and search observation records in this patient's record"
    )


async def test_sign_in_sets_the_accounts_saved_language_when_one_is_kept(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    spanish, other = await env.account("patient"), await env.account("patient")

    async def lookup(conn: object, account_id: str) -> str | None:
        return "es" if account_id == spanish.id else None

    monkeypatch.setattr(i18n, "SAVED_LANGUAGE", [lookup])
    browser = env.client()
    r = await env.signin(browser, spanish.email)
    assert r.status_code == 303
    assert r.headers["set-cookie"].count(f"{i18n.COOKIE}=es") == 1
    assert '<html lang="es">' in (await browser.get("/account")).text
    r = await env.signin(env.client(), other.email)
    assert r.status_code == 303 and i18n.COOKIE not in r.headers.get("set-cookie", "")
