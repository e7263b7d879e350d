"""The data export ("download my data") through HTTP across the five services, on each database and storage backend:
two people in the same group and event, one asks for her data; every service gives its part, the images service
writes one zip with her pictures, the users service mails her the signed link. The archive holds exactly her data;
the link is refused when tampered with or expired, and the archive is deleted after; a service that never answers
fails the export with its name; nobody reads another's export."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from gatherly.app.devmail import text_of
from gatherly.app.testing import Person, wait_for_mail
from gatherly.contracts.users import UserExportRequested
from gatherly.events import service as events_service
from gatherly.events.store import EventsUnitOfWork
from gatherly.images import service as images_service
from gatherly.images import tables
from gatherly.images.domain import UserId, export_key
from gatherly.images.service import STORAGE
from gatherly.images.storage import StorageUnavailable
from gatherly.images.store import unit_of_work as images_unit_of_work
from gatherly.kernel import exports
from gatherly.kernel.clock import FrozenClock
from gatherly.kernel.messages import Envelope
from gatherly.users import service as users_service
from gatherly.users.store import unit_of_work as users_unit_of_work

from .conftest import ImagesApi, Pictures

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _export(api: ImagesApi, person: Person) -> str:
    response = await api.client.post("/api/users/me/export", headers=person.auth)
    assert response.status_code == 202, response.text
    export_id: str = response.json()["export_id"]
    return export_id


async def _status(api: ImagesApi, person: Person, export_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/users/me/exports/{export_id}", headers=person.auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _finished(api: ImagesApi, person: Person, export_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (status := await _status(api, person, export_id))["status"] == "pending":
        assert time.monotonic() < deadline, "export still pending"
        await api.running.settle()
        await asyncio.sleep(0.05)
    return status


async def _group_and_event(api: ImagesApi, ann: Person, bob: Person) -> tuple[str, str]:
    """A group Ann organizes and Bob joined; an event of it both go to and comment on, both checked in."""
    group = await api.client.post("/api/groups", json={"name": f"Walks {uuid.uuid4().hex[:6]}"}, headers=ann.auth)
    assert group.status_code == 201, group.text
    group_id = group.json()["id"]
    joined = await api.client.post(f"/api/groups/{group_id}/join", json={"answers": []}, headers=bob.auth)
    assert joined.status_code == 200, joined.text
    await api.running.settle()
    starts = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    body = {
        "group_id": group_id,
        "title": "Evening walk",
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=2)).isoformat(),
        "timezone": "Europe/Berlin",
        "online_url": "https://meet.example.org/walk",
    }
    event = await api.client.post("/api/events", json=body, headers=ann.auth)
    assert event.status_code == 201, event.text
    event_id = event.json()["id"]
    for person, text in ((ann, "Ann was here"), (bob, "Bob says hello")):
        rsvp = await api.client.put(
            f"/api/events/{event_id}/rsvp", json={"response": "yes", "guests": 0}, headers=person.auth
        )
        assert rsvp.status_code == 200, rsvp.text
        comment = await api.client.post(f"/api/events/{event_id}/comments", json={"body": text}, headers=person.auth)
        assert comment.status_code == 201, comment.text
        check_in = await api.client.post(f"/api/events/{event_id}/check-in/{person.user_id}", headers=ann.auth)
        assert check_in.status_code == 200, check_in.text
    await api.running.settle()
    return group_id, event_id


def _documents(archive: zipfile.ZipFile) -> dict[str, Any]:
    return {name: json.loads(archive.read(name)) for name in archive.namelist() if name.endswith(".json")}


async def test_my_export_holds_exactly_my_data_and_comes_by_email(api: ImagesApi, pictures: type[Pictures]) -> None:
    ann, bob = await api.person(f"Ann {uuid.uuid4().hex[:4]}"), await api.person(f"Bob {uuid.uuid4().hex[:4]}")
    group_id, event_id = await _group_and_event(api, ann, bob)
    ann_picture = await api.upload(ann, pictures.jpeg())
    bob_picture = await api.upload(bob, pictures.jpeg((300, 300)))
    assert ann_picture["status"] == bob_picture["status"] == "ready"

    mails_before = len(await wait_for_mail(api.running, ann.email))  # the confirmation of the sign-up
    export_id = await _export(api, ann)
    assert await _export(api, ann) == export_id  # asked again while pending: the same export
    assert (await _status(api, ann, export_id))["status"] in ("pending", "ready")
    status = await _finished(api, ann, export_id)
    assert status["status"] == "ready", status
    link = status["download_url"]
    assert link and status["reason"] is None
    assert datetime.fromisoformat(status["expires_at"]) > datetime.now(UTC) + timedelta(days=1)

    mails = await wait_for_mail(api.running, ann.email, mails_before + 1)
    assert len(mails) == mails_before + 1
    text = text_of(mails[-1])
    assert link in text, text
    assert all(link not in text_of(mail) for mail in await wait_for_mail(api.running, bob.email))

    download = await api.fetch(link)
    assert download.status_code == 200, download.text
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    documents = _documents(archive)
    assert set(documents) == {
        "users/profile.json",
        "groups/memberships.json",
        "groups/join_requests.json",
        "groups/bans.json",
        "groups/groups_organized.json",
        "events/rsvps.json",
        "events/comments.json",
        "events/check_ins.json",
        "notifications/inbox.json",
        "notifications/preferences.json",
        "notifications/push_subscriptions.json",
        "images/index.json",
    }
    assert "README.txt" in archive.namelist()
    profile = documents["users/profile.json"]
    assert (profile["user_id"], profile["email"], profile["display_name"]) == (ann.user_id, ann.email, ann.display_name)
    assert [(m["group_id"], m["role"]) for m in documents["groups/memberships.json"]] == [(group_id, "organizer")]
    assert [g["group_id"] for g in documents["groups/groups_organized.json"]] == [group_id]
    assert [(r["event_id"], r["status"]) for r in documents["events/rsvps.json"]] == [(event_id, "going")]
    assert [c["body"] for c in documents["events/comments.json"]] == ["Ann was here"]
    assert [c["event_id"] for c in documents["events/check_ins.json"]] == [event_id]
    # Bob joining her group told Ann (a notification about him, in her inbox: hers); nothing of Bob's own inbox.
    assert all(isinstance(n["title"], str) for n in documents["notifications/inbox.json"])
    assert [i["image_id"] for i in documents["images/index.json"]] == [ann_picture["id"]]
    picture = archive.read(f"images/{ann_picture['id']}.webp")
    assert picture[:4] == b"RIFF" and picture[8:12] == b"WEBP"
    assert f"images/{bob_picture['id']}.webp" not in archive.namelist()
    # Nothing of Bob's: not his id, his address or his comment, in any file but Ann's inbox (where he is news).
    for name, document in documents.items():
        if name != "notifications/inbox.json":
            dumped = json.dumps(document)
            assert bob.user_id not in dumped and bob.email not in dumped and "Bob says hello" not in dumped, name

    # Bob cannot read Ann's export, nor can anyone without a token.
    assert (await api.client.get(f"/api/users/me/exports/{export_id}", headers=bob.auth)).status_code == 404
    assert (await api.client.get(f"/api/users/me/exports/{export_id}")).status_code == 401

    # A ready export is not pending any more: asking again starts a new one.
    again = await _export(api, ann)
    assert again != export_id
    assert (await _finished(api, ann, again))["status"] == "ready"


async def test_the_link_is_refused_when_tampered_with_or_expired_and_the_archive_deleted(api: ImagesApi) -> None:
    settings = api.running.settings
    saved = settings.export_link_ttl_seconds
    settings.export_link_ttl_seconds = 10  # long enough to read the status on a slow run
    try:
        cleo = await api.person(f"Cleo {uuid.uuid4().hex[:4]}")
        export_id = await _export(api, cleo)
        status = await _finished(api, cleo, export_id)
    finally:
        settings.export_link_ttl_seconds = saved
    link = status["download_url"]
    expires_at = datetime.fromisoformat(status["expires_at"])
    tampered = re.sub(r"(signature=|Signature=)(.)", lambda m: m.group(1) + ("A" if m.group(2) != "A" else "B"), link)
    assert tampered != link
    assert (await api.fetch(tampered)).status_code == 403
    other = link.replace(export_id, str(uuid.uuid4()))
    assert (await api.fetch(other)).status_code == 403  # the signature covers the key

    assert (await api.fetch(link)).status_code == 200
    await asyncio.sleep((expires_at + timedelta(seconds=1) - datetime.now(UTC)).total_seconds())
    assert (await api.fetch(link)).status_code == 403
    after = await _status(api, cleo, export_id)
    assert (after["status"], after["download_url"]) == ("ready", None)

    storage = api.running.process.host("images").context.extras["storage"]
    deadline = time.monotonic() + 30
    while await storage.read(export_key(export_id), limit=10_000_000) is not None:  # the tidy task's next round
        assert time.monotonic() < deadline, "the expired archive is still in storage"
        await asyncio.sleep(0.2)


async def test_a_service_that_never_answers_fails_the_export_with_its_name(
    api: ImagesApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lost(uow: EventsUnitOfWork, event: UserExportRequested) -> None:
        return None  # as if the events service's part sat on the dead-letter topic

    monkeypatch.setattr(events_service, "give_export_part", lost)
    dana = await api.person(f"Dana {uuid.uuid4().hex[:4]}")
    export_id = await _export(api, dana)
    await api.running.settle()
    await asyncio.sleep(1.5)  # the archive task's poll: it must find nothing to write
    assert (await _status(api, dana, export_id))["status"] == "pending"

    users = api.running.process.host("users").context
    uow = users_unit_of_work(users)
    uow.clock = FrozenClock(datetime.now(UTC) + timedelta(seconds=users.settings.export_deadline_seconds + 1))
    assert await users_service.fail_overdue_exports(uow) >= 1
    status = await _status(api, dana, export_id)
    assert status["status"] == "failed" and status["download_url"] is None
    assert "events" in status["reason"] and "images" in status["reason"], status
    assert "groups" not in status["reason"] and "notifications" not in status["reason"], status

    assert await _export(api, dana) != export_id  # a failed export is not pending: a new one starts


async def test_a_part_over_its_bound_fails_the_export_saying_why(
    api: ImagesApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "EXPORT_PART_MAX_BYTES", 10)  # every part is larger than this
    fay = await api.person(f"Fay {uuid.uuid4().hex[:4]}")
    export_id = await _export(api, fay)
    status = await _finished(api, fay, export_id)
    assert (status["status"], status["download_url"]) == ("failed", None)
    assert "more than the 10 a part may take" in status["reason"], status


class WriteOutage:
    """The real storage, except that the next `failures` writes of `key` fail as an unreachable storage does.

    Only that key is failed and counted: the server is shared, and another test's export may be written meanwhile.
    """

    def __init__(self, real: Any, failures: int) -> None:
        self.real = real
        self.failures = failures
        self.calls = 0
        self.key = ""  # set once the export's id is known

    async def write(self, key: str, data: bytes, **options: Any) -> None:
        if key != self.key:
            await self.real.write(key, data, **options)
            return
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise StorageUnavailable("storage is down (injected)")
        await self.real.write(key, data, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_an_archive_that_storage_cannot_take_is_written_when_it_can(
    api: ImagesApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images_service, "ARCHIVE_RETRY", timedelta(0))
    context = api.running.process.host("images").context
    real = context.extras[STORAGE]
    outage = context.extras[STORAGE] = WriteOutage(real, failures=2)
    try:
        gus = await api.person(f"Gus {uuid.uuid4().hex[:4]}")
        export_id = await _export(api, gus)
        outage.key = export_key(export_id)  # written only once every service has sent its part: well after this
        status = await _finished(api, gus, export_id, timeout=60)
    finally:
        context.extras[STORAGE] = real
    assert status["status"] == "ready", status
    assert outage.failures == 0 and outage.calls == 3
    assert (await api.fetch(status["download_url"])).status_code == 200
    await api.running.settle()
    records = await api.running.process.platform.log.read("user_export", limit=100_000)
    ready = [e for e in map(Envelope.from_record, records) if e.type == "user_export.archive_ready"]
    assert [e.payload["export_id"] for e in ready].count(export_id) == 1


class DeletionWhileWriting:
    """The real storage, except that the person's account is deleted (as the images service hears of it) while
    the archive `key` is being written."""

    def __init__(self, real: Any, context: Any, user_id: str) -> None:
        self.real, self.context, self.user_id = real, context, user_id
        self.key = ""  # set once the export's id is known
        self.crossed = False

    async def write(self, key: str, data: bytes, **options: Any) -> None:
        if key != self.key:
            await self.real.write(key, data, **options)
            return
        uow = images_unit_of_work(self.context)
        async with uow:
            await uow.exports.forget_person(UserId(self.user_id), uow.clock.now())
        await self.real.write(key, data, **options)
        self.crossed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_an_archive_written_while_its_person_is_deleted_is_deleted_from_storage(api: ImagesApi) -> None:
    context = api.running.process.host("images").context
    real = context.extras[STORAGE]
    hal = await api.person(f"Hal {uuid.uuid4().hex[:4]}")
    crossing = context.extras[STORAGE] = DeletionWhileWriting(real, context, hal.user_id)
    try:
        export_id = await _export(api, hal)
        crossing.key = export_key(export_id)  # written only once every service has sent its part: well after this
        deadline = time.monotonic() + 60
        while not crossing.crossed:
            assert time.monotonic() < deadline, "the archive was never written"
            await asyncio.sleep(0.05)
    finally:
        context.extras[STORAGE] = real

    await _until_not_stored(api, export_id)  # it was written after the deletion: the tidy task deletes it
    assert await _exports_of(api, hal.user_id) == ({export_id: "expired"}, 0)
    await api.running.settle()
    records = await api.running.process.platform.log.read("user_export", limit=100_000)
    ready = [e for e in map(Envelope.from_record, records) if e.type == "user_export.archive_ready"]
    assert export_id not in [e.payload["export_id"] for e in ready]


@pytest.mark.parametrize(
    "export_id",
    ["%00", "a%00b", "%ED%A0%80", "x" * 10_000, "..%2F..%2Fetc", "00000000-0000-0000-0000-00000000000G"],
    ids=["nul", "nul-inside", "lone-surrogate", "huge", "path", "not-hex"],
)
async def test_hostile_export_ids_are_refused(api: ImagesApi, export_id: str) -> None:
    erin = await api.person("Erin")
    response = await api.client.get(f"/api/users/me/exports/{export_id}", headers=erin.auth)
    assert 400 <= response.status_code < 500 and response.status_code != 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_an_unknown_export_is_not_found(api: ImagesApi) -> None:
    erin = await api.person("Erin")
    response = await api.client.get(f"/api/users/me/exports/{uuid.uuid4()}", headers=erin.auth)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def _exports_of(api: ImagesApi, user_id: str) -> tuple[dict[str, str], int]:
    """The images service's exports of a person (id → status) and how many parts it still keeps of them."""
    async with api.running.process.host("images").context.db.read_session() as session:
        rows = await session.execute(
            select(tables.exports.c.id, tables.exports.c.status).where(tables.exports.c.user_id == user_id)
        )
        statuses = {row.id: row.status for row in rows}
        parts = await session.execute(
            select(tables.export_parts.c.export_id).where(tables.export_parts.c.user_id == user_id)
        )
        return statuses, len(parts.all())


async def _until_not_stored(api: ImagesApi, export_id: str, timeout: float = 30.0) -> None:
    storage = api.running.process.host("images").context.extras["storage"]
    deadline = time.monotonic() + timeout
    while await storage.read(export_key(export_id), limit=10_000_000) is not None:  # the tidy task's next round
        assert time.monotonic() < deadline, "the deleted person's archive is still in storage"
        await api.running.settle()
        await asyncio.sleep(0.2)


async def _delete_account(api: ImagesApi, person: Person) -> None:
    response = await api.client.delete("/api/users/me", headers=person.auth)
    assert response.status_code == 202, response.text
    await api.running.settle()


async def test_a_deleted_persons_archive_is_deleted_with_the_account_not_when_its_link_expires(api: ImagesApi) -> None:
    dora = await api.person(f"Dora {uuid.uuid4().hex[:4]}")
    export_id = await _export(api, dora)
    assert (await _finished(api, dora, export_id))["status"] == "ready"

    await _delete_account(api, dora)

    await _until_not_stored(api, export_id)  # not two days later, when the link would have expired
    assert await _exports_of(api, dora.user_id) == ({export_id: "expired"}, 0)


async def test_an_export_asked_for_just_before_the_deletion_leaves_no_archive(api: ImagesApi) -> None:
    eve = await api.person(f"Eve {uuid.uuid4().hex[:4]}")
    export_id = await _export(api, eve)
    await _delete_account(api, eve)  # the parts and the deletion cross in the log

    await _until_not_stored(api, export_id)
    # Whichever came first in this service, the request and parts or the deletion: no archive, no part kept.
    statuses, parts = await _exports_of(api, eve.user_id)
    assert statuses.get(export_id) in (None, "abandoned", "expired") and parts == 0
