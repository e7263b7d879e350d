"""Across services, on each database backend: a picture uploaded to the images service becomes the person's avatar
on their profile (users service) and beside their name in a group's member list (groups service), because both keep
read models of image.ready; deleting the image (image.deleted) takes it off both. Nobody can wear another's image."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from PIL import Image

from gatherly.app.testing import Person, RunningGatherly, send_upload, sign_up

pytestmark = pytest.mark.asyncio(loop_scope="module")


def a_portrait() -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((500, 500)).convert("RGB").save(out, "JPEG")
    return out.getvalue()


async def upload_avatar(gatherly: RunningGatherly, person: Person) -> dict[str, Any]:
    data = a_portrait()
    body = {"purpose": "avatar", "content_type": "image/jpeg", "size_bytes": len(data)}
    slot = (await gatherly.client.post("/api/images/uploads", json=body, headers=person.auth)).json()
    upload = slot["upload"]
    assert (await send_upload(gatherly.client, upload, data)).status_code in (200, 201, 204)  # S3: a presigned POST
    assert (
        await gatherly.client.post(f"/api/images/{slot['image_id']}/complete", headers=person.auth)
    ).status_code == 202
    deadline = time.monotonic() + 30
    while (image := (await gatherly.client.get(f"/api/images/{slot['image_id']}", headers=person.auth)).json())[
        "status"
    ] == "pending":
        assert time.monotonic() < deadline
        await gatherly.settle()
    assert image["status"] == "ready", image
    await gatherly.settle()
    return image


def paths(variants: dict[str, str] | None) -> dict[str, str] | None:
    """The variants' objects: the URLs' signatures differ with the moment they were signed."""
    return {name: url.split("?")[0] for name, url in variants.items()} if variants else None


async def member_avatar(gatherly: RunningGatherly, group_id: str, person: Person) -> Any:
    members = (await gatherly.client.get(f"/api/groups/{group_id}/members", params={"limit": 100})).json()["items"]
    return next(m["avatar"] for m in members if m["user_id"] == person.user_id)


async def test_an_uploaded_avatar_shows_on_the_profile_and_the_member_list_until_deleted(
    gatherly: RunningGatherly,
) -> None:
    ann = await sign_up(gatherly, display_name="Ann")
    group = await gatherly.client.post("/api/groups", json={"name": "Photo walks"}, headers=ann.auth)
    assert group.status_code == 201, group.text
    group_id = group.json()["id"]

    image = await upload_avatar(gatherly, ann)
    patched = await gatherly.client.patch("/api/users/me", json={"avatar_image_id": image["id"]}, headers=ann.auth)
    assert patched.status_code == 200 and paths(patched.json()["avatar"]) == paths(image["variants"])
    await gatherly.settle()

    profile = (await gatherly.client.get(f"/api/users/{ann.user_id}")).json()
    assert paths(profile["avatar"]) == paths(image["variants"])
    assert paths(await member_avatar(gatherly, group_id, ann)) == paths(image["variants"])
    thumb = await gatherly.client.get(profile["avatar"]["thumb"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"

    assert (await gatherly.client.delete(f"/api/images/{image['id']}", headers=ann.auth)).status_code == 204
    await gatherly.settle()
    assert (await gatherly.client.get(f"/api/users/{ann.user_id}")).json()["avatar"] is None
    assert await member_avatar(gatherly, group_id, ann) is None


async def test_another_persons_image_id_never_becomes_my_avatar(gatherly: RunningGatherly) -> None:
    ann, bob = await sign_up(gatherly), await sign_up(gatherly)
    image = await upload_avatar(gatherly, ann)
    patched = await gatherly.client.patch("/api/users/me", json={"avatar_image_id": image["id"]}, headers=bob.auth)
    assert patched.status_code == 200 and patched.json()["avatar"] is None
    await gatherly.settle()
    assert (await gatherly.client.get(f"/api/users/{bob.user_id}")).json()["avatar"] is None
