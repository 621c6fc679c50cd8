"""Secure messaging pages and model: a patient writes to a pool, the pool's inbox gets a Task, a
clinician replies (the Task completes), read state per reader, attachments checked by content and
served only to those who may see the conversation; another patient's conversation is a 404."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from housecall.messaging import attachments, model
from housecall.workspace import inbox
from tests.clinic import Clinic, text_of
from tests.identity.conftest import CSRF

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


async def send(
    c: Clinic,
    who: str,
    path: str,
    data: dict[str, str],
    *,
    form_from: str,
    file: tuple[str, bytes, str] | None = None,
) -> httpx.Response:
    """Submit a multipart form the way a browser does (the CSRF token from the page it is on)."""
    browser = c.browsers[who]
    page = await browser.get(form_from)
    match = CSRF.search(page.text)
    assert match, (form_from, page.status_code, page.text[:300])
    files = {"attachment": file} if file else {"attachment": ("", b"", "application/octet-stream")}
    return await browser.post(path, data={**data, "csrf": match.group(1)}, files=files)


async def start(c: Clinic, *, topic: str = "Rash on my arm", text: str = "It itches since Monday.",
                file: tuple[str, bytes, str] | None = None, who: str = "patient") -> str:  # fmt: skip
    r = await send(c, who, "/portal/messages", {"topic": topic, "pool": c.pool, "text": text},
                   form_from="/portal/messages", file=file)  # fmt: skip
    assert r.status_code == 303, text_of(r.text)[:800]
    match = re.fullmatch(r"/portal/messages/([A-Za-z0-9.-]+)\?sent=1", r.headers["location"])
    assert match, r.headers["location"]
    return match.group(1)


async def open_tasks(c: Clinic, thread_id: str) -> list[dict[str, Any]]:
    return await c.search(
        "Task", [("focus", f"Communication/{thread_id}"), ("status", "requested,in-progress")]
    )


async def test_patient_writes_the_pool_sees_it_and_a_clinician_replies(clinic: Clinic) -> None:
    c = clinic
    thread_id = await start(c, file=("rash.png", PNG, "image/png"))

    # In the store: a Communication to the pool, about the patient, with the file as a Binary.
    root = await c.read("Communication", thread_id)
    assert root["recipient"] == [{"reference": f"HealthcareService/{c.pool}"}]
    assert root["subject"]["reference"] == f"Patient/{c.patient}"
    assert root["sender"]["reference"] == f"Patient/{c.patient}"
    assert root["topic"]["text"] == "Rash on my arm" and model.is_message(root)
    attachment = root["payload"][1]["contentAttachment"]
    assert attachment["contentType"] == "image/png" and attachment["size"] == len(PNG)
    assert attachment["url"].startswith("Binary/") and attachment["title"] == "rash.png"
    binary = await c.read("Binary", attachment["url"].removeprefix("Binary/"))
    assert binary["securityContext"]["reference"] == f"Patient/{c.patient}"

    # One inbox Task of kind "message" in the chosen pool, linking to the workspace page.
    tasks = await open_tasks(c, thread_id)
    assert len(tasks) == 1 and inbox.kind_of(tasks[0]) == "message" and inbox.pool_of(tasks[0]) == c.pool
    work = await c.browsers["nurse"].get("/workspace", params={"pool": c.pool, "kind": "message"})
    assert "Rash on my arm" in text_of(work.text) and f"/workspace/messages/{thread_id}" in work.text

    # The patient's list shows it, waiting; a follow-up before anyone answers opens no second Task.
    listing = text_of((await c.browsers["patient"].get("/portal/messages")).text)
    assert "Rash on my arm" in listing and "Waiting for the care team" in listing
    r = await send(c, "patient", f"/portal/messages/{thread_id}", {"text": "Now it is spreading."},
                   form_from=f"/portal/messages/{thread_id}")  # fmt: skip
    assert r.status_code == 303
    assert len(await open_tasks(c, thread_id)) == 1

    # The clinician reads the thread (with the file) and replies: the Task completes.
    page = await c.browsers["clinician"].get(f"/workspace/messages/{thread_id}")
    text = text_of(page.text)
    assert page.status_code == 200 and "It itches since Monday." in text and "Now it is spreading." in text
    assert "Ana Reyes" in text and "Primary care nurses" in text
    r = await send(c, "clinician", f"/workspace/messages/{thread_id}", {"text": "Please send a photo in daylight."},
                   form_from=f"/workspace/messages/{thread_id}")  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == f"/workspace/messages/{thread_id}?sent=1"
    assert await open_tasks(c, thread_id) == []
    done = await c.search("Task", [("focus", f"Communication/{thread_id}")])
    assert [t["status"] for t in done] == ["completed"]
    assert done[0]["owner"]["reference"] == f"Practitioner/{c.clinician}"

    replies = await c.search("Communication", [("part-of", f"Communication/{thread_id}"), ("_sort", "sent")])
    last = replies[-1]
    assert last["sender"]["reference"] == f"Practitioner/{c.clinician}"
    assert last["recipient"] == [{"reference": f"Patient/{c.patient}"}]
    assert last["inResponseTo"] == [{"reference": f"Communication/{replies[0]['id']}"}]

    # The patient sees one unread message on the home page and the list; opening the thread reads it.
    home = text_of((await c.browsers["patient"].get("/portal")).text)
    assert "1 unread message" in home
    listing = (await c.browsers["patient"].get("/portal/messages")).text
    assert "The care team replied" in text_of(listing) and "1 unread" in text_of(listing)
    page = await c.browsers["patient"].get(f"/portal/messages/{thread_id}")
    assert "Please send a photo in daylight." in text_of(page.text) and "New" in text_of(page.text)
    assert "Expected reply: within 2 business days" in text_of(page.text)
    assert "unread message" not in text_of((await c.browsers["patient"].get("/portal")).text)
    stored = await c.read("Communication", last["id"])
    assert stored["received"] and model._read_by(stored) == {f"Patient/{c.patient}": stored["received"]}

    # Another follow-up from the patient opens the thread's work again.
    await send(c, "patient", f"/portal/messages/{thread_id}", {"text": "Thanks, here it is."},
               form_from=f"/portal/messages/{thread_id}")  # fmt: skip
    assert len(await open_tasks(c, thread_id)) == 1


async def test_mark_done_completes_the_task_without_a_reply(clinic: Clinic) -> None:
    c = clinic
    thread_id = await start(c, topic="Thank you")
    r = await send(c, "nurse", f"/workspace/messages/{thread_id}/done", {},
                   form_from=f"/workspace/messages/{thread_id}")  # fmt: skip
    assert r.status_code == 303 and r.headers["location"].endswith("?done=1")
    assert await open_tasks(c, thread_id) == []
    page = await c.browsers["nurse"].get(f"/workspace/messages/{thread_id}?done=1")
    assert "Marked as done." in text_of(page.text) and "Mark as done" not in text_of(page.text)


async def test_attachments_download_with_their_proven_type(clinic: Clinic) -> None:
    c = clinic
    thread_id = await start(c, topic="My lab letter", file=("../../etc/letter.PDF", PDF, "text/html"))
    root = await c.read("Communication", thread_id)
    assert root["payload"][1]["contentAttachment"]["contentType"] == "application/pdf"
    assert root["payload"][1]["contentAttachment"]["title"] == "letter.pdf"
    for who, base in (("patient", "/portal"), ("nurse", "/workspace"), ("clinician", "/workspace")):
        r = await c.browsers[who].get(f"{base}/messages/{thread_id}/attachments/{thread_id}")
        assert r.status_code == 200, who
        assert r.content == PDF and r.headers["content-type"] == "application/pdf"
        assert r.headers["content-disposition"].startswith('attachment; filename="letter.pdf"')
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
    # A message without a file, or a message of another thread, has nothing to download.
    assert (
        await c.browsers["patient"].get(f"/portal/messages/{thread_id}/attachments/nothing")
    ).status_code == 404


async def test_files_are_checked_by_content_and_size_and_what_was_typed_is_kept(clinic: Clinic) -> None:
    c = clinic
    before = len(await c.search("Communication", [("subject", f"Patient/{c.patient}")]))
    cases = [
        (
            ("notes.pdf", b"<html><script>alert(1)</script></html>", "application/pdf"),
            "photo (PNG or JPEG) or a PDF",
        ),
        (("big.png", PNG + bytes(attachments.MAX_BYTES), "image/png"), "smaller than 5 MB"),
        (("empty.png", b"", "image/png"), "The file is empty"),
    ]
    for file, message in cases:
        r = await send(c, "patient", "/portal/messages",
                       {"topic": "Typed subject", "pool": c.pool, "text": "Typed words & more"},
                       form_from="/portal/messages", file=file)  # fmt: skip
        assert r.status_code == 400, file[0]
        assert message in text_of(r.text)
        assert 'id="attachment-error"' in r.text and 'aria-invalid="true"' in r.text
        assert 'value="Typed subject"' in r.text and "Typed words &amp; more</textarea>" in r.text
        assert f'<option value="{c.pool}" selected>' in r.text
    assert len(await c.search("Communication", [("subject", f"Patient/{c.patient}")])) == before
    assert await c.search("Binary", []) == []

    # Missing subject, pool and text: each said beside its field.
    r = await send(
        c, "patient", "/portal/messages", {"topic": "", "pool": "", "text": ""}, form_from="/portal/messages"
    )
    assert r.status_code == 400
    for field in ("topic", "pool", "text"):
        assert f'id="{field}-error"' in r.text
    # Too long: refused, not cut short.
    r = await send(c, "patient", "/portal/messages", {"topic": "t" * 121, "pool": c.pool, "text": "w" * 5001},
                   form_from="/portal/messages")  # fmt: skip
    assert (
        r.status_code == 400 and "120 characters or fewer" in r.text and "5000 characters or fewer" in r.text
    )
    assert "w" * 5001 in r.text
    # A pool that is not one of the organization's is refused too.
    r = await send(c, "patient", "/portal/messages", {"topic": "x", "pool": "nope", "text": "y"},
                   form_from="/portal/messages")  # fmt: skip
    assert r.status_code == 400 and 'id="pool-error"' in r.text


async def test_another_patients_thread_and_attachment_are_not_found(clinic: Clinic) -> None:
    c = clinic
    thread_id = await start(
        c, topic="Private matter", file=("scan.jpg", b"\xff\xd8\xff\xe0" + bytes(50), "image/jpeg")
    )
    # A second patient with an account of their own, and the front desk, try the same URLs.
    other = await c.env.account("patient", patient_id=c.other_patient)
    browser = c.env.client()
    await c.env.signin(browser, other.email, next="/portal")
    c.browsers["other"] = browser
    urls = [f"/portal/messages/{thread_id}", f"/portal/messages/{thread_id}/attachments/{thread_id}"]
    for url in urls:
        r = await browser.get(url)
        assert r.status_code == 404 and "Private matter" not in r.text, url
    r = await send(
        c, "other", f"/portal/messages/{thread_id}", {"text": "sneaky"}, form_from="/portal/messages"
    )
    assert r.status_code == 404
    assert "Private matter" not in (await browser.get("/portal/messages")).text
    # Care-team pages refuse patients and the front desk outright.
    for who in ("other", "desk"):
        for url in (
            f"/workspace/messages/{thread_id}",
            f"/workspace/messages/{thread_id}/attachments/{thread_id}",
        ):
            assert (await c.browsers[who].get(url)).status_code == 403, (who, url)
    # The front desk is not a portal user either.
    assert (await c.browsers["desk"].get(f"/portal/messages/{thread_id}")).status_code == 403
    # Nothing was added to the thread.
    assert len(await c.search("Communication", [("part-of", f"Communication/{thread_id}")])) == 0


async def test_a_clinician_outside_the_care_team_gets_not_found(clinic: Clinic) -> None:
    c = clinic
    thread_id = await start(c, topic="Team only", file=("x.png", PNG, "image/png"))
    stranger = await c.create({"resourceType": "Practitioner", "name": [{"family": "Stranger"}]})
    browser, _account, _secret = await c.env.staff_session("clinician", practitioner_id=stranger["id"])
    c.browsers["stranger"] = browser
    for url in (
        f"/workspace/messages/{thread_id}",
        f"/workspace/messages/{thread_id}/attachments/{thread_id}",
    ):
        r = await browser.get(url)
        assert r.status_code == 404 and "Team only" not in r.text, url
    r = await send(
        c, "stranger", f"/workspace/messages/{thread_id}", {"text": "hello"}, form_from="/workspace"
    )
    assert r.status_code == 404
    r = await send(c, "stranger", f"/workspace/messages/{thread_id}/done", {}, form_from="/workspace")
    assert r.status_code == 404
    assert len(await open_tasks(c, thread_id)) == 1


async def test_a_file_named_in_a_message_must_be_kept_for_that_patient(clinic: Clinic) -> None:
    """A patient may write Communications on the API: one naming another patient's Binary gets
    nothing from the download route."""
    c = clinic
    theirs = await c.create({"resourceType": "Binary", "contentType": "image/png",
                             "securityContext": {"reference": f"Patient/{c.other_patient}"},
                             "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"})  # fmt: skip
    thread_id = await start(c, topic="Innocent")
    root = await c.read("Communication", thread_id)
    root["payload"].append(
        {"contentAttachment": {"contentType": "image/png", "url": f"Binary/{theirs['id']}"}}
    )
    async with c.env.db.transaction() as conn:
        from housecall.access.policy import Access
        from housecall.fhir import interactions as ix

        ctx = ix.Ctx(conn, c.env.settings, "https://testserver/fhir", Access.system(c.env.org_id))
        await ix.update(ctx, "Communication", thread_id, root)
    r = await c.browsers["patient"].get(f"/portal/messages/{thread_id}/attachments/{thread_id}")
    assert r.status_code == 404


async def test_read_state_is_per_reader(clinic: Clinic) -> None:
    c = clinic
    from housecall.identity import service

    proxy = await c.env.account("proxy")
    async with c.env.db.transaction() as conn:
        await service.grant_proxy(conn, proxy.id, c.patient, granted_by="system:test", relationship="parent",
                                  settings=c.env.settings)  # fmt: skip
    browser = c.env.client()
    await c.env.signin(browser, proxy.email, next="/portal")
    c.browsers["proxy"] = browser
    await c.form_post("proxy", "/account/acting-for", {"patient": c.patient, "next": "/portal"},
                      form_from="/portal/choose")  # fmt: skip

    # The proxy starts the conversation: the sender is their RelatedPerson.
    thread_id = await start(c, who="proxy", topic="For my mother")
    root = await c.read("Communication", thread_id)
    assert root["sender"]["reference"].startswith("RelatedPerson/")
    await send(c, "nurse", f"/workspace/messages/{thread_id}", {"text": "We will call her."},
               form_from=f"/workspace/messages/{thread_id}")  # fmt: skip
    # The nurse opened the proxy's message: received is set, the nurse is a reader.
    root = await c.read("Communication", thread_id)
    assert root["received"] and f"Practitioner/{c.nurse}" in model._read_by(root)
    assert "Read" in text_of((await browser.get(f"/portal/messages/{thread_id}")).text)

    # The proxy has read the reply now; the patient has not.
    assert "unread message" not in text_of((await browser.get("/portal")).text)
    assert "1 unread message" in text_of((await c.browsers["patient"].get("/portal")).text)
    await c.browsers["patient"].get(f"/portal/messages/{thread_id}")
    assert "unread message" not in text_of((await c.browsers["patient"].get("/portal")).text)
    reply = (await c.search("Communication", [("part-of", f"Communication/{thread_id}")]))[0]
    assert set(model._read_by(reply)) == {f"Patient/{c.patient}", root["sender"]["reference"]}


async def test_response_time_comes_from_the_pool(clinic: Clinic) -> None:
    c = clinic
    cardiology = await c.create({
        "resourceType": "HealthcareService", "active": True, "name": "Cardiology nurses",
        "characteristic": [{"coding": [{"system": model.RESPONSE_SYSTEM, "code": "1"}]}],
    })  # fmt: skip
    page = text_of((await c.browsers["patient"].get("/portal/messages")).text)
    assert "Cardiology nurses — Expected reply: within 1 business day" in page
    assert "Primary care nurses — Expected reply: within 2 business days" in page
    r = await send(c, "patient", "/portal/messages", {"topic": "Palpitations", "pool": cardiology["id"], "text": "Since yesterday."},
                   form_from="/portal/messages")  # fmt: skip
    thread_id = r.headers["location"].split("/")[-1].split("?")[0]
    page = text_of((await c.browsers["patient"].get(r.headers["location"])).text)
    assert "Your message was sent." in page and "Expected reply: within 1 business day" in page
    tasks = await open_tasks(c, thread_id)
    assert inbox.pool_of(tasks[0]) == cardiology["id"]
    # In Spanish.
    await c.form_post(
        "patient", "/language", {"lang": "es", "next": "/portal/messages"}, form_from="/portal/messages"
    )
    page = text_of((await c.browsers["patient"].get(r.headers["location"])).text)
    assert "1 día hábil" in page


async def test_reads_and_writes_are_audited(clinic: Clinic) -> None:
    c = clinic
    thread_id = await start(c, topic="Audit me", file=("a.png", PNG, "image/png"))
    await c.browsers["nurse"].get(f"/workspace/messages/{thread_id}/attachments/{thread_id}")
    from housecall.audit.trail import sink_for

    await sink_for(c.env.app.state).close()
    async with c.env.db.reader() as conn:
        rows = await conn.fetch("SELECT agent, event FROM audit_log WHERE org_id = $1 AND patient_id = $2",
                                c.env.org_id, c.patient)  # fmt: skip
    seen = set()
    for agent, event in rows:
        parsed = json.loads(bytes(event))
        interaction = parsed["subtype"][0]["code"]
        for entity in parsed.get("entity") or []:
            ref = (entity.get("what") or {}).get("reference", "")
            seen.add((agent, interaction, ref.split("/")[0]))
    patient, nurse = f"Patient/{c.patient}", f"Practitioner/{c.nurse}"
    # The patient created the Communication, and (as the system on their behalf, after the page's
    # own checks) the Binary and the inbox Task: all name the patient as the agent.
    for res_type in ("Communication", "Binary", "Task"):
        assert (patient, "create", res_type) in seen, (res_type, sorted(seen))
    # The nurse's download: the Communication read, then the Binary read, as the nurse.
    assert (nurse, "read", "Communication") in seen and (nurse, "read", "Binary") in seen, sorted(seen)


async def test_the_patient_and_active_proxies_are_the_ones_told(clinic: Clinic) -> None:
    c = clinic
    from housecall.identity import service

    proxy, former = await c.env.account("proxy"), await c.env.account("proxy")
    async with c.env.db.transaction() as conn:
        await service.grant_proxy(
            conn, proxy.id, c.patient, granted_by="system:test", settings=c.env.settings
        )
        grant = await service.grant_proxy(
            conn, former.id, c.patient, granted_by="system:test", settings=c.env.settings
        )
        await service.revoke_proxy(conn, grant.id)
        await service.grant_proxy(
            conn, former.id, c.other_patient, granted_by="system:test", settings=c.env.settings
        )
    async with c.env.db.reader() as conn:
        told = [a for a, _ in await service.accounts_for_patient(conn, c.env.org_id, c.patient)]
        assert sorted(told) == sorted([c.accounts["patient"].id, proxy.id])
        assert await service.accounts_for_patient(conn, "another-org", c.patient) == []
    async with c.env.db.transaction() as conn:
        assert await service.disable_account(conn, c.env.org_id, proxy.id)
    async with c.env.db.reader() as conn:
        assert [a for a, _ in await service.accounts_for_patient(conn, c.env.org_id, c.patient)] == [
            c.accounts["patient"].id
        ]


async def test_a_message_from_another_record_does_not_join_the_thread(clinic: Clinic) -> None:
    """partOf can name any thread on the API: only messages in the thread's patient's record count,
    even for a clinician who cares for both patients."""
    c = clinic
    thread_id = await start(c, topic="Mine")
    await c.create({"resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{c.other_patient}"},
                    "participant": [{"member": {"reference": f"Practitioner/{c.clinician}"}}]})  # fmt: skip
    await c.create({
        "resourceType": "Communication", "status": "completed", "subject": {"reference": f"Patient/{c.other_patient}"},
        "category": [{"coding": [{"system": model.CATEGORY_SYSTEM, "code": model.CATEGORY_CODE}]}],
        "partOf": [{"reference": f"Communication/{thread_id}"}], "sent": "2030-01-01T00:00:00Z",
        "sender": {"reference": f"Patient/{c.other_patient}"}, "payload": [{"contentString": "Injected words"}],
    })  # fmt: skip
    page = await c.browsers["clinician"].get(f"/workspace/messages/{thread_id}")
    assert (
        page.status_code == 200
        and "It itches since Monday." in page.text
        and "Injected words" not in page.text
    )
