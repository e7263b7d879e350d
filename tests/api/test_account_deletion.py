"""Issue #16's account deletion across the five services, through HTTP on each database backend: every service
erases what it holds and replies, the saga completes, and afterwards no endpoint returns the person's name, email,
avatar or RSVPs; member and attendee counts are right and a group that lost its last organizer has a new one. A
service that never answers makes the saga fail with its name. (A process killed mid-saga:
test_account_deletion_crash.py.)"""

from __future__ import annotations

import asyncio
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gatherly.app.testing import FAST_SETTINGS, Person, RunningGatherly, running_gatherly, send_upload, sign_up
from gatherly.kernel.clock import FrozenClock
from gatherly.kernel.testing import DB_BACKENDS
from gatherly.users import service as users_service
from gatherly.users.store import UsersUnitOfWork

pytestmark = pytest.mark.asyncio(loop_scope="module")

EVERYONE = {"users", "groups", "events", "notifications", "images"}


def _portrait() -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((400, 400)).convert("RGB").save(out, "JPEG")
    return out.getvalue()


async def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def _avatar(gatherly: RunningGatherly, person: Person) -> dict[str, Any]:
    """Upload a picture and wear it; the image as the images service shows it once ready."""
    client, data = gatherly.client, _portrait()
    body = {"purpose": "avatar", "content_type": "image/jpeg", "size_bytes": len(data)}
    slot = await _ok(await client.post("/api/images/uploads", json=body, headers=person.auth), 201)
    upload = slot["upload"]
    assert (await send_upload(client, upload, data)).status_code in (200, 201, 204)  # S3: a presigned POST
    await _ok(await client.post(f"/api/images/{slot['image_id']}/complete", headers=person.auth), 202)
    deadline = time.monotonic() + 30
    while (image := (await client.get(f"/api/images/{slot['image_id']}", headers=person.auth)).json())[
        "status"
    ] == "pending":
        assert time.monotonic() < deadline, image
        await gatherly.settle(timeout=60)
    assert image["status"] == "ready", image
    await _ok(await client.patch("/api/users/me", json={"avatar_image_id": image["id"]}, headers=person.auth))
    await gatherly.settle(timeout=60)
    return dict(image)


async def _group(gatherly: RunningGatherly, organizer: Person, name: str, *members: Person) -> str:
    created = await _ok(await gatherly.client.post("/api/groups", json={"name": name}, headers=organizer.auth), 201)
    for member in members:
        await _ok(await gatherly.client.post(f"/api/groups/{created['id']}/join", json={}, headers=member.auth))
    return str(created["id"])


async def _event(gatherly: RunningGatherly, organizer: Person, group_id: str) -> str:
    await gatherly.settle(timeout=60)  # the events service knows the group and its leaders
    starts = datetime.now(UTC) + timedelta(days=7)
    body = {
        "group_id": group_id,
        "title": "Ridge walk",
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=3)).isoformat(),
        "timezone": "Europe/Berlin",
        "venue": {"name": "The old mill", "address": "Mill lane 1"},
    }
    event = await _ok(await gatherly.client.post("/api/events", json=body, headers=organizer.auth), 201)
    return str(event["id"])


async def _rsvp(gatherly: RunningGatherly, person: Person, event_id: str) -> None:
    await gatherly.settle(timeout=60)  # the events service knows the membership
    body = {"response": "yes"}
    await _ok(await gatherly.client.put(f"/api/events/{event_id}/rsvp", json=body, headers=person.auth))


async def _completed(gatherly: RunningGatherly, person: Person, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        await gatherly.settle(timeout=timeout)
        progress: dict[str, Any] = (await gatherly.client.get("/api/users/me/deletion", headers=person.auth)).json()
        if progress["status"] != "pending":
            return progress
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.05)


async def test_a_deleted_account_is_gone_from_every_service_and_the_counts_and_organizers_follow(
    gatherly: RunningGatherly,
) -> None:
    client = gatherly.client
    zed = await sign_up(gatherly, display_name="Zebedee Quartzfield")
    ann, bob, cat = [await sign_up(gatherly, display_name=name) for name in ("Ann", "Bob", "Cat")]
    image = await _avatar(gatherly, zed)
    avatar_paths = [url.split("?")[0] for url in image["variants"].values()]
    hikers = await _group(gatherly, ann, "Hikers", zed, bob)
    zeds_club = await _group(gatherly, zed, "Zed's club", cat, bob)
    await _ok(
        await client.put(
            f"/api/groups/{zeds_club}/members/{bob.user_id}/role", json={"role": "co_organizer"}, headers=zed.auth
        )
    )
    alone = await _group(gatherly, zed, "Only Zed")
    walk = await _event(gatherly, ann, hikers)
    for person in (zed, bob):
        await _rsvp(gatherly, person, walk)
    comment = await _ok(
        await client.post(f"/api/events/{walk}/comments", json={"body": "See you there"}, headers=zed.auth), 201
    )
    await gatherly.settle(timeout=60)
    going_before = (await _ok(await client.get(f"/api/events/{walk}", headers=ann.auth)))["going_count"]

    def everything_seen_by(viewer: Person) -> list[tuple[str, dict[str, str]]]:
        auth = viewer.auth
        return [
            (f"/api/users/{zed.user_id}", {}),  # a 404 afterwards (whose problem repeats the id asked for)
            (f"/api/groups/{hikers}", auth),
            (f"/api/groups/{hikers}/members?limit=100", auth),
            (f"/api/groups/{zeds_club}/members?limit=100", auth),
            ("/api/groups?member=me", auth),
            (f"/api/events/{walk}", auth),
            (f"/api/events/{walk}/attendees?limit=100", auth),
            (f"/api/events/{walk}/comments?limit=100", auth),
            ("/api/events?limit=100", auth),
            ("/api/notifications?limit=100", auth),
            (f"/api/images/{image['id']}", auth),
        ]

    async def texts(viewer: Person) -> str:
        seen = [
            (await client.get(path, headers=headers)).text.replace(f"No user {zed.user_id}.", "No user.")
            for path, headers in everything_seen_by(viewer)
        ]
        return "\n".join(seen)

    # The scan sees the person before (or it would prove nothing).
    before = await texts(ann)
    assert zed.display_name in before and zed.user_id in before and avatar_paths[0] in before

    deletion = await _ok(await client.delete("/api/users/me", headers=zed.auth), 202)
    progress = await _completed(gatherly, zed)
    assert (progress["status"], progress["reason"], set(progress["answered"])) == ("completed", None, EVERYONE)

    for viewer in (ann, bob, cat):
        after = await texts(viewer)
        for trace in (zed.display_name, zed.email, zed.user_id, *avatar_paths):
            assert trace not in after, (viewer.display_name, trace)
    assert (await client.get(f"/api/users/{zed.user_id}")).status_code == 404
    assert (await client.get(f"/api/images/{image['id']}", headers=ann.auth)).status_code == 404

    # Counts: Hikers lost a member, the walk a seat; Zed's club has Bob (its co-organizer) as organizer.
    assert (await _ok(await client.get(f"/api/groups/{hikers}")))["member_count"] == 2
    assert (await _ok(await client.get(f"/api/events/{walk}", headers=ann.auth)))["going_count"] == going_before - 1
    club = await _ok(await client.get(f"/api/groups/{zeds_club}/members", headers=bob.auth))
    assert {m["user_id"]: m["role"] for m in club["items"]} == {bob.user_id: "organizer", cat.user_id: "member"}
    assert (await _ok(await client.get(f"/api/groups/{zeds_club}")))["member_count"] == 2
    assert (await client.get(f"/api/groups/{alone}")).status_code == 404  # nobody else belonged: deleted
    # The comment stays, by nobody.
    comments = await _ok(await client.get(f"/api/events/{walk}/comments", headers=ann.auth))
    [kept] = [c for c in comments["items"] if c["id"] == comment["id"]]
    assert (kept["author_id"], kept["body"]) == (None, "See you there")
    assert deletion["deletion_id"]


async def test_a_service_that_never_answers_makes_the_deletion_fail_with_its_name(tmp_path: Path) -> None:
    for backend in DB_BACKENDS:
        # Everything but the images service: nobody answers for it.
        services = ["users", "groups", "events", "notifications"]
        async with running_gatherly(tmp_path / backend, services, database_backend=backend, **FAST_SETTINGS) as partial:
            zed = await sign_up(partial, display_name="Zed")
            await _group(partial, zed, "Zed's walks")
            await _ok(await partial.client.delete("/api/users/me", headers=zed.auth), 202)
            await partial.settle(timeout=60)
            progress = (await partial.client.get("/api/users/me/deletion", headers=zed.auth)).json()
            assert (progress["status"], set(progress["answered"])) == ("pending", EVERYONE - {"images"})

            # The deadline passes (the service's once-a-minute check, run now with the clock an hour on).
            context = partial.process.host("users").context
            later = FrozenClock(
                datetime.now(UTC) + timedelta(seconds=partial.settings.account_deletion_deadline_seconds)
            )
            await users_service.fail_overdue_deletions(UsersUnitOfWork(context.db, clock=later, signal=context.signal))

            failed = (await partial.client.get("/api/users/me/deletion", headers=zed.auth)).json()
            assert failed["status"] == "failed"
            assert "no answer from images." in failed["reason"]
            for answered in EVERYONE - {"images"}:
                assert answered not in failed["reason"].split("no answer from")[1]
