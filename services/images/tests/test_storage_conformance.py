"""The storage port's conformance suite: ONE set of tests, run against every adapter named in
GATHERLY_TEST_STORAGE_BACKENDS (local files behind the service's /media; a real S3 server, SeaweedFS). Whatever the
images service assumes of a storage is checked here through real HTTP, as browsers will use it."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gatherly.images.storage import (
    LocalStorage,
    ObjectStorage,
    S3Storage,
    StorageUnavailable,
    UploadRefused,
    refusals,
    s3_client,
)
from gatherly.kernel.resilience import Resilience
from gatherly.kernel.settings import Settings
from gatherly.kernel.testing import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")


def storage_of(storage_api: Any) -> ObjectStorage:
    storage: ObjectStorage = storage_api.running.process.host("images").context.extras["storage"]
    return storage


def new_key() -> str:
    return f"uploads/{uuid.uuid4()}"


def soon(seconds: float = 600) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def until_past(moment: datetime) -> None:
    """Expiry is the point here: wait until the moment has passed (by a second: the storage's own clock decides,
    and URL lifetimes are whole seconds)."""
    await asyncio.sleep((moment + timedelta(seconds=1) - datetime.now(UTC)).total_seconds())


async def target(storage_api: Any, key: str, data: bytes, content_type: str = "image/png", **kw: Any) -> dict[str, Any]:
    made = await storage_of(storage_api).upload_target(
        key, content_type=content_type, size=len(data), expires_at=kw.get("expires_at", soon())
    )
    return {"url": made.url, "method": made.method, "headers": made.headers, "fields": made.fields}


async def test_an_upload_to_its_target_is_stored_byte_for_byte(storage_api: Any) -> None:
    key, data = new_key(), bytes(range(256)) * 40
    answer = await storage_api.send(await target(storage_api, key, data), data)
    assert answer.status_code in (200, 201, 204), answer.text
    assert await storage_of(storage_api).read(key, limit=len(data)) == data


@pytest.mark.parametrize("change", ["one byte more", "one byte less", "empty", "another content type"])
async def test_a_target_takes_only_the_declared_size_and_type(storage_api: Any, change: str) -> None:
    key, data = new_key(), b"\x89PNG" + b"x" * 996
    upload = await target(storage_api, key, data)
    body, content_type = {
        "one byte more": (data + b"x", None),
        "one byte less": (data[:-1], None),
        "empty": (b"", None),
        "another content type": (data, "text/html"),
    }[change]
    answer = await storage_api.send(upload, body, content_type=content_type)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    assert await storage_of(storage_api).read(key, limit=10_000) is None


async def test_a_tampered_target_is_refused(storage_api: Any) -> None:
    key, data = new_key(), b"x" * 100
    upload = await target(storage_api, key, data)
    if upload["method"] == "PUT":
        attempts = [
            {**upload, "url": upload["url"].replace("size=100", "size=1000")},
            {**upload, "url": upload["url"].replace(key, new_key())},
            {**upload, "url": upload["url"][:-3] + ("AAA" if not upload["url"].endswith("AAA") else "BBB")},
        ]
    else:
        fields = upload["fields"]
        attempts = [
            {**upload, "fields": {**fields, "key": new_key()}},
            {**upload, "fields": {**fields, "x-amz-signature": "0" * 64}},
            {**upload, "fields": {**fields, "policy": fields["policy"][:-8] + "AAAAAAAA"}},
        ]
    for attempt in attempts:
        answer = await storage_api.send(attempt, data)
        assert answer.status_code == 403, (attempt, answer.status_code, answer.text)
    assert await storage_of(storage_api).read(key, limit=1000) is None


async def test_an_expired_target_is_refused(storage_api: Any) -> None:
    key, data = new_key(), b"x" * 100
    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    upload = await target(storage_api, key, data, expires_at=expires_at)
    await until_past(expires_at)
    answer = await storage_api.send(upload, data)
    assert answer.status_code == 403, answer.text
    assert await storage_of(storage_api).read(key, limit=1000) is None


async def test_written_objects_are_read_and_deleted_and_deleting_twice_is_fine(storage_api: Any) -> None:
    storage = storage_of(storage_api)
    keys = [f"images/{uuid.uuid4()}/thumb.webp" for _ in range(3)]
    for key in keys:
        await storage.write(key, key.encode(), content_type="image/webp")
    assert [await storage.read(key, limit=100) for key in keys] == [key.encode() for key in keys]
    assert await storage.delete(keys[:2]) == {}
    assert await storage.delete(keys[:2]) == {}
    assert [await storage.read(key, limit=100) for key in keys] == [None, None, keys[2].encode()]
    assert await storage.read(new_key(), limit=100) is None


async def test_reading_more_than_the_limit_is_refused(storage_api: Any) -> None:
    storage, key = storage_of(storage_api), f"images/{uuid.uuid4()}/large.webp"
    await storage.write(key, b"x" * 1000, content_type="image/webp")
    with pytest.raises(UploadRefused):
        await storage.read(key, limit=999)


async def test_a_download_url_serves_the_object_until_it_expires_and_not_when_tampered(storage_api: Any) -> None:
    storage, key = storage_of(storage_api), f"images/{uuid.uuid4()}/medium.webp"
    await storage.write(key, b"RIFF-pretend-webp", content_type="image/webp")
    url = storage.download_url(key, expires_at=soon())
    fetched = await storage_api.fetch(url)
    assert fetched.status_code == 200 and fetched.content == b"RIFF-pretend-webp"
    assert fetched.headers["content-type"] == "image/webp"
    other = f"images/{uuid.uuid4()}/medium.webp"
    await storage.write(other, b"other", content_type="image/webp")
    assert (await storage_api.fetch(url.replace(key, other))).status_code == 403

    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    short = storage.download_url(key, expires_at=expires_at)
    assert (await storage_api.fetch(short)).status_code == 200
    await until_past(expires_at)
    assert (await storage_api.fetch(short)).status_code == 403


async def test_the_storage_passes_its_readiness_check(storage_api: Any) -> None:
    await storage_of(storage_api).check()
    assert (await storage_api.client.get("/readyz")).status_code == 200


# --- when the storage is down ---------------------------------------------------------------------------------------


async def test_an_s3_that_cannot_be_reached_raises_storage_unavailable_and_opens_the_circuit() -> None:
    with socket_closed() as port:
        settings = Settings(
            storage_backend="s3",
            s3_endpoint_url=f"http://127.0.0.1:{port}",
            s3_access_key_id="x",
            s3_secret_access_key="y",
        )
        resilience = Resilience(failure_threshold=2, attempts=1, wait_initial=0.01, wait_max=0.01)
        storage = S3Storage(s3_client(settings), "nothing", resilience)
        for _ in range(2):
            with pytest.raises(StorageUnavailable):
                await storage.read(new_key(), limit=10)
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="circuit"):
            await storage.write(new_key(), b"x", content_type="image/png")
        assert time.monotonic() - started < 0.5, "an open circuit fails fast, without calling"


async def test_local_storage_deletes_the_others_when_one_object_cannot_be_and_names_it(tmp_path: Any) -> None:
    storage = LocalStorage(tmp_path / "media", "http://localhost", b"k" * 32, lambda: datetime.now(UTC))
    kept, gone = f"images/{uuid.uuid4()}/thumb.webp", f"images/{uuid.uuid4()}/thumb.webp"
    await storage.write(gone, b"x", content_type="image/webp")
    (tmp_path / "media" / kept).mkdir(parents=True)  # a directory where a file was: unlink refuses it
    (tmp_path / "media" / kept / "inside").write_bytes(b"x")

    refused = await storage.delete([kept, gone])

    assert list(refused) == [kept] and "Error" in refused[kept]
    assert await storage.read(gone, limit=10) is None


async def test_an_s3_delete_answer_names_each_refused_key_with_its_reason() -> None:
    answer = {
        "Deleted": [{"Key": "images/a/thumb.webp"}],
        "Errors": [
            {"Key": "images/b/thumb.webp", "Code": "AccessDenied", "Message": "Access Denied"},
            {"Key": "images/c/thumb.webp", "Code": "InternalError"},
        ],
    }
    assert refusals(answer) == {
        "images/b/thumb.webp": "AccessDenied: Access Denied",
        "images/c/thumb.webp": "InternalError",
    }
    assert refusals({"Deleted": []}) == {}


async def test_local_storage_without_its_directory_is_not_ready(tmp_path: Any) -> None:
    storage = LocalStorage(tmp_path / "media", "http://localhost", b"k" * 32, lambda: datetime.now(UTC))
    await storage.check()
    (tmp_path / "media").rmdir()
    with pytest.raises(StorageUnavailable):
        await storage.check()


class socket_closed:
    """A loopback port nothing listens on."""

    def __enter__(self) -> int:
        return free_port()

    def __exit__(self, *_: object) -> None:
        return None
