"""Notifications on both engines: released by the commit, delivered by the job queue to a real SMTP
server and to the outbox, in the account's language, once, with no health information."""

from __future__ import annotations

import logging
from email.message import Message
from typing import Any

import pytest

from housecall.core import jobs
from housecall.fhir import interactions as ix
from housecall.identity import service as identity
from housecall.identity.clock import clock
from housecall.notify import Kind, send
from housecall.notify import service as notify
from housecall.notify.texts import WORDING, Language, check_link
from tests.identity.conftest import Env
from tests.notify.conftest import PUBLIC_URL, GatedMailbox, use_smtp, work
from tests.support import free_port

PHONE = "+15550100199"
CANARY = "Zqvx-Canary-Diagnosis-4471"


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode().replace("\r\n", "\n")  # SMTP's line ends


async def choose(env: Env, account_id: str, **choices: Any) -> None:
    prefs = notify.Preferences(**choices)
    async with env.db.transaction() as conn:
        await notify.save_preferences(conn, account_id, prefs)


async def notify_now(env: Env, account_id: str, kind: Kind = Kind.NEW_MESSAGE, link: str = "/messages/m1",
                     **kw: Any) -> str | None:  # fmt: skip
    async with env.db.transaction() as conn:
        return await send(conn, env.org_id, account_id, kind, link, **kw)


async def deliveries(env: Env, account_id: str) -> list[dict[str, Any]]:
    cols = ("channel", "address", "address_masked", "kind", "language", "text", "status", "attempts", "error")
    async with env.db.reader() as conn:
        rows = await conn.fetch(
            f"SELECT {', '.join(cols)} FROM notification WHERE account_id = $1 ORDER BY channel", account_id
        )
    return [dict(zip(cols, r, strict=True)) for r in rows]


async def outbox(env: Env, account_id: str) -> list[tuple[str, str, str]]:
    """(channel, address, text) of what the local carrier and push service hold for the account."""
    async with env.db.reader() as conn:
        rows = await conn.fetch(
            "SELECT o.channel, o.address, o.text FROM notification_outbox o JOIN notification n "
            "ON n.id = o.delivery_id WHERE n.account_id = $1 ORDER BY o.channel",
            account_id,
        )
    return [(r[0], r[1], r[2]) for r in rows]


def test_every_kind_has_a_sentence_in_every_language() -> None:
    for language in Language:
        assert set(WORDING[language]) == set(Kind), language
        for wording in WORDING[language].values():
            # A whole sentence; one that introduces the link it is sent with ends in a colon.
            assert "{" not in wording.sentence and wording.sentence.endswith((".", ":"))
    sentences = [w.sentence for lang in Language for w in WORDING[lang].values()]
    assert len(set(sentences)) == len(sentences)


@pytest.mark.parametrize("link", ["https://elsewhere.example/x", "//elsewhere.example/x", "/a b", "/x#frag",
                                  "messages/1", "/\\evil", "/x?q=<script>", "/" + "a" * 600, ""])  # fmt: skip
def test_only_local_paths_are_links(link: str) -> None:
    with pytest.raises(ValueError, match="local path"):
        check_link(link)
    assert check_link("/messages/3f2a-9c?tab=new") == "/messages/3f2a-9c?tab=new"


async def test_an_email_in_the_chosen_language_says_only_the_sentence_and_the_link(env: Env) -> None:
    spanish = await env.account("patient")
    await choose(env, spanish.id, language=Language.ES)
    english = await env.account("patient")  # no choices made: e-mail in English
    await notify_now(env, spanish.id, Kind.RESULT_RELEASED, "/record/results")
    await notify_now(env, english.id, Kind.APPOINTMENT_REMINDER, "/appointments/a1")
    assert env.mail.for_address(spanish.email) == []  # queued, not sent: the worker sends
    assert await work(env.db) >= 2

    es = env.mail.wait_for(spanish.email)[0]
    assert es["Subject"] == "Housecall: Novedades en su expediente"
    assert es["Content-Language"] == "es" and es["Auto-Submitted"] == "auto-generated"
    assert body(es).startswith("Hay algo nuevo en su expediente de Housecall.\n\nInicie sesión para verlo:\n"
                               f"{PUBLIC_URL}/record/results\n")  # fmt: skip
    assert env.mail.link(spanish.email) == f"{PUBLIC_URL}/record/results"
    en = env.mail.wait_for(english.email)[0]
    assert en["Subject"] == "Housecall: Appointment reminder"
    assert "You have an appointment coming up. See the details in Housecall." in body(en)
    assert f"{PUBLIC_URL}/account/notifications" in body(en)

    [row] = await deliveries(env, spanish.id)
    assert row["status"] == "sent" and row["channel"] == "email" and row["language"] == "es"
    assert row["address_masked"] == spanish.email[0] + "•••@" + spanish.email.split("@")[1]
    assert row["text"] == body(es)
    assert await work(env.db) == 0 and len(env.mail.for_address(spanish.email)) == 1


async def test_sms_and_push_go_to_the_outbox_once_however_often_the_job_runs(env: Env) -> None:
    patient = await env.account("patient")
    await choose(env, patient.id, email=False, sms=True, push=True, phone=PHONE)
    notification_id = await notify_now(env, patient.id, Kind.VISIT_STARTING, "/visits/v1/join")
    await work(env.db)
    text = f"Your visit is ready to start. Join it from Housecall. {PUBLIC_URL}/visits/v1/join"
    assert await outbox(env, patient.id) == [("push", f"account:{patient.id}", text), ("sms", PHONE, text)]
    assert [(r["channel"], r["status"], r["address_masked"]) for r in await deliveries(env, patient.id)] == [
        ("push", "sent", "browser"), ("sms", "sent", "•••0199"),
    ]  # fmt: skip
    assert env.mail.for_address(patient.email) == []

    # The job runs again (as after a worker lost its lease): the effects stay single.
    args = {"notification": notification_id, "org": env.org_id, "account": patient.id,
            "kind": "visit_starting", "link": "/visits/v1/join", "key": None}  # fmt: skip
    again = jobs.Job("rerun", notify.DELIVER, args, attempts=2, max_attempts=12)
    assert await jobs.run_one(env.db, again)
    assert len(await outbox(env, patient.id)) == 2


async def test_nothing_is_sent_when_the_request_rolls_back(env: Env) -> None:
    patient = await env.account("patient")
    await choose(env, patient.id, sms=True, phone=PHONE)

    async def failing_request() -> None:
        async with env.db.transaction() as conn:
            await send(conn, env.org_id, patient.id, Kind.NEW_MESSAGE, "/messages/m1")
            raise RuntimeError("the message could not be stored")

    with pytest.raises(RuntimeError):
        await failing_request()

    await work(env.db)
    assert env.mail.for_address(patient.email) == []
    assert await deliveries(env, patient.id) == [] and await outbox(env, patient.id) == []
    async with env.db.reader() as conn:
        assert await conn.fetchval("SELECT count(*) FROM job WHERE args LIKE $1", f"%{patient.id}%") == 0


async def test_a_key_makes_sending_idempotent_and_a_time_schedules_it(env: Env) -> None:
    patient = await env.account("patient")
    at = clock.now_us() + 3600 * jobs.US
    key = f"reminder:{patient.id}:1h"
    assert await notify_now(
        env, patient.id, Kind.APPOINTMENT_REMINDER, "/appointments/a1", key=key, run_at=at
    )
    assert await notify_now(env, patient.id, Kind.APPOINTMENT_REMINDER, "/appointments/a1", key=key,
                            run_at=at) is None  # fmt: skip
    await work(env.db)
    assert env.mail.for_address(patient.email) == []  # not due yet
    clock.advance(3601)
    await work(env.db)
    assert len(env.mail.wait_for(patient.email)) == 1
    assert [r["status"] for r in await deliveries(env, patient.id)] == ["sent"]


async def test_features_cannot_send_free_text_foreign_links_or_to_another_organization(env: Env) -> None:
    patient = await env.account("patient")
    other_org = "org-other-" + env.org_id[-6:]
    async with env.db.transaction() as conn:
        await identity.create_organization(conn, other_org, "Other", settings=env.settings)
    async with env.db.transaction() as conn:
        with pytest.raises(ValueError, match="new_lab_value"):
            await send(conn, env.org_id, patient.id, "new_lab_value", "/x")
        with pytest.raises(ValueError, match="local path"):
            await send(conn, env.org_id, patient.id, Kind.NEW_MESSAGE, "https://phish.example/")
        with pytest.raises(ValueError, match="no such account"):
            await send(conn, other_org, patient.id, Kind.NEW_MESSAGE, "/messages/m1")


async def test_a_disabled_account_is_not_told_anything(env: Env) -> None:
    patient = await env.account("patient")
    await notify_now(env, patient.id)
    async with env.db.transaction() as conn:
        await identity.disable_account(conn, env.org_id, patient.id)
    await work(env.db)
    assert env.mail.for_address(patient.email) == [] and await deliveries(env, patient.id) == []


async def test_a_mail_server_away_is_waited_for_and_a_refused_address_fails_at_once(
    env: Env, monkeypatch: pytest.MonkeyPatch, gated_smtp: tuple[GatedMailbox, int]
) -> None:
    patient = await env.account("patient")
    use_smtp(monkeypatch, free_port())  # nothing listens there
    await notify_now(env, patient.id)
    await work(env.db)
    [row] = await deliveries(env, patient.id)
    assert (row["status"], row["attempts"], row["error"]) == ("queued", 1, "ConnectionRefusedError")
    use_smtp(monkeypatch, gated_smtp[1])  # the server is back
    clock.advance(jobs.backoff_seconds(1) + 1)
    await work(env.db)
    [row] = await deliveries(env, patient.id)
    assert (row["status"], row["attempts"], row["error"]) == ("sent", 2, None)
    assert len(gated_smtp[0].wait_for(patient.email)) == 1

    nobody = await env.account("patient", email=f"nobody-{env.org_id}@example.org")
    await notify_now(env, nobody.id)
    await work(env.db)
    [row] = await deliveries(env, nobody.id)
    assert (row["status"], row["error"]) == ("failed", "SMTPRecipientsRefused")  # no retry can help
    clock.advance(jobs.BACKOFF_CAP_SECONDS)
    await work(env.db)
    assert (await deliveries(env, nobody.id))[0]["attempts"] == 1


async def test_a_canary_in_the_record_never_reaches_a_notification_or_the_logs(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with env.db.transaction() as conn:
        ctx = identity._ctx(conn, env.settings, env.org_id)
        patient_id = (
            await ix.create(ctx, "Patient", {"resourceType": "Patient", "name": [{"family": CANARY}]})
        ).stored
        assert patient_id is not None
        message = (await ix.create(ctx, "Communication", {
            "resourceType": "Communication", "status": "completed",
            "subject": {"reference": f"Patient/{patient_id.res_id}"},
            "payload": [{"contentString": f"Your biopsy shows {CANARY}"}],
        })).stored  # fmt: skip
        assert message is not None
    patient = await env.account("patient", patient_id=patient_id.res_id, display_name=f"Ann {CANARY}")
    await choose(env, patient.id, sms=True, push=True, phone=PHONE)
    use_smtp(monkeypatch, free_port())  # the first attempt fails: its log line is checked too
    await notify_now(env, patient.id, Kind.NEW_MESSAGE, f"/messages/{message.res_id}")
    await work(env.db)
    use_smtp(monkeypatch, env.settings.smtp_port)
    clock.advance(jobs.backoff_seconds(1) + 1)
    await work(env.db)

    [mail] = env.mail.wait_for(patient.email)
    assert CANARY not in mail.as_string() and patient.display_name not in mail.as_string()
    assert f"/messages/{message.res_id}" in body(mail)
    async with env.db.reader() as conn:
        stored = await conn.fetch("SELECT * FROM notification WHERE account_id = $1", patient.id)
    sent = await outbox(env, patient.id)
    assert len(stored) == 3 and len(sent) == 2
    assert CANARY not in repr(stored) + repr(sent)
    # Housecall's log lines (the test's SMTP server, "mail.log", stands for the outside world).
    logged = "\n".join(caplog.handler.format(r) for r in caplog.records if not r.name.startswith("mail.log"))
    assert "notification delivery" in logged and "ConnectionRefusedError" in logged
    for secret in (CANARY, patient.email, PHONE, message.res_id, patient_id.res_id):
        assert secret not in logged


async def test_an_email_claimed_by_a_live_worker_is_left_to_it_until_the_claim_is_stale(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient = await env.account("patient")
    use_smtp(monkeypatch, free_port())
    await notify_now(env, patient.id)
    await work(env.db)  # the first attempt fails; the delivery row now exists
    async with env.db.transaction() as conn:  # another worker claims it and is sending right now
        await conn.execute(
            "UPDATE notification SET status = 'sending', claimed = $1 WHERE account_id = $2",
            clock.now_us() + (jobs.backoff_seconds(1) + 1) * jobs.US, patient.id,
        )  # fmt: skip
    use_smtp(monkeypatch, env.settings.smtp_port)
    clock.advance(jobs.backoff_seconds(1) + 1)
    await work(env.db)
    assert env.mail.for_address(patient.email) == []
    assert [r["status"] for r in await deliveries(env, patient.id)] == ["sending"]
    clock.advance(notify.CLAIM_SECONDS + jobs.BACKOFF_CAP_SECONDS)  # that worker is gone
    await work(env.db)
    assert len(env.mail.wait_for(patient.email)) == 1
    assert [(r["status"], r["attempts"]) for r in await deliveries(env, patient.id)] == [("sent", 2)]
