"""Fixtures of the images service's tests: a real S3-compatible server (SeaweedFS, started once per session when
`s3` is among GATHERLY_TEST_STORAGE_BACKENDS), a whole Gatherly per database and storage backend, pictures made
on the spot (good ones and the bad-input corpus: nothing binary is kept in git), and helpers over the HTTP API."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import struct
import time
import uuid
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from gatherly.app.testing import FAST_SETTINGS, Person, RunningGatherly, running_gatherly, sign_up
from gatherly.kernel.seaweedfs import running_seaweedfs
from gatherly.kernel.testing import DB_BACKENDS

STORAGE_BACKENDS = [
    name.strip() for name in os.environ.get("GATHERLY_TEST_STORAGE_BACKENDS", "local").split(",") if name.strip()
]
S3_ACCESS_KEY = "gatherly-test"
S3_SECRET_KEY = "gatherly-test-secret"  # a throwaway server's credentials, made for this test session


# --- the S3 server --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def settings(self, bucket: str | None = None) -> dict[str, Any]:
        return {
            "storage_backend": "s3",
            "s3_endpoint_url": self.endpoint,
            "s3_bucket": bucket or f"test-{uuid.uuid4().hex[:12]}",
            "s3_access_key_id": S3_ACCESS_KEY,
            "s3_secret_access_key": S3_SECRET_KEY,
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS on free ports with one identity, so signatures and presigned-POST policies are really checked.
    Fails, never skips, when it cannot start."""
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), S3_ACCESS_KEY, S3_SECRET_KEY) as server:
        yield S3Server(server.endpoint)


def storage_overrides(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if backend == "local":
        return {"storage_backend": "local"}
    if backend == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        return server.settings()
    raise ValueError(f"unknown storage backend {backend!r} (known: local, s3)")


# --- pictures -------------------------------------------------------------------------------------------------------


class Pictures:
    """Files made in the test: real pictures and every kind of bad input."""

    @staticmethod
    def jpeg(size: tuple[int, int] = (800, 600), *, exif: Image.Exif | None = None, quality: int = 85) -> bytes:
        image = Image.linear_gradient("L").resize(size).convert("RGB")
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, exif=exif or Image.Exif())
        return out.getvalue()

    @staticmethod
    def photo(size: tuple[int, int] = (6000, 4000)) -> bytes:
        """A camera-sized JPEG with detail in it (noise over a gradient), so decoding and resizing do real work."""
        noise = Image.effect_noise((size[0] // 4, size[1] // 4), 64).resize(size)
        gradient = Image.linear_gradient("L").resize(size)
        image = Image.merge("RGB", (noise, gradient, noise))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=90)
        return out.getvalue()

    @staticmethod
    def png(size: tuple[int, int] = (300, 200), mode: str = "RGBA") -> bytes:
        out = io.BytesIO()
        Image.new(mode, size, (10, 200, 30, 128) if mode == "RGBA" else 90).save(out, "PNG")
        return out.getvalue()

    @staticmethod
    def webp(size: tuple[int, int] = (300, 200)) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", size, "blue").save(out, "WEBP")
        return out.getvalue()

    @staticmethod
    def gif(size: tuple[int, int] = (120, 80)) -> bytes:
        out = io.BytesIO()
        Image.new("P", size, 3).save(out, "GIF")
        return out.getvalue()

    @staticmethod
    def animated(kind: str) -> bytes:
        frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "green", "blue")]
        out = io.BytesIO()
        frames[0].save(out, kind, save_all=True, append_images=frames[1:], duration=100, loop=0)
        return out.getvalue()

    @staticmethod
    def png_claiming(width: int, height: int, *, bit_depth: int = 1, pixels: bool = True) -> bytes:
        """A hand-made greyscale PNG of the given size whose rows are all zero: a few KB that decode to
        width x height pixels (a decompression bomb when large). Without `pixels`, the header alone."""

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
        row = b"\x00" * (1 + (width * bit_depth + 7) // 8)
        compressor = zlib.compressobj(9)
        body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush() if pixels else b""
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")

    @staticmethod
    def with_zip_appended(image: bytes) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr("payload.txt", "not a picture")
        return image + out.getvalue()

    @staticmethod
    def gif_with_script() -> bytes:
        """A valid GIF whose comment block carries a script (a GIF/JavaScript polyglot's payload)."""
        out = io.BytesIO()
        Image.new("P", (20, 20), 1).save(out, "GIF", comment=b"<script>alert(document.cookie)</script>")
        return out.getvalue()


@pytest.fixture
def pictures() -> type[Pictures]:
    return Pictures


# --- the API --------------------------------------------------------------------------------------------------------


@dataclass
class ImagesApi:
    """Helpers over the HTTP API, asserting the status of each step that is setup, not the point of a test."""

    running: RunningGatherly
    storage: str
    _people: dict[str, Person] = field(default_factory=dict)
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def client(self) -> httpx.AsyncClient:
        return self.running.client

    async def person(self, name: str | None = None) -> Person:
        name = name or f"person-{next(self._names)}"
        if name not in self._people:
            self._people[name] = await sign_up(self.running, display_name=name)
        return self._people[name]

    async def slot(
        self, person: Person, data: bytes, content_type: str = "image/jpeg", purpose: str = "event_photo", **extra: Any
    ) -> dict[str, Any]:
        body = {"purpose": purpose, "content_type": content_type, "size_bytes": len(data), **extra}
        response = await self.client.post("/api/images/uploads", json=body, headers=person.auth)
        assert response.status_code == 201, response.text
        slot: dict[str, Any] = response.json()
        return slot

    async def send(self, upload: dict[str, Any], data: bytes, content_type: str | None = None) -> httpx.Response:
        """Upload as a browser would: PUT with the headers, or a multipart POST with the fields then the file."""
        headers = dict(upload["headers"])
        if content_type is not None:
            headers["Content-Type"] = content_type
        ours = upload["url"].startswith(self.running.settings.effective_public_url)
        client = self.client if ours else httpx.AsyncClient(timeout=30)
        try:
            if upload["method"] == "PUT":
                return await client.put(upload["url"], content=data, headers=headers)
            fields = dict(upload["fields"])
            if content_type is not None:
                fields["Content-Type"] = content_type
            return await client.post(upload["url"], data=fields, files={"file": ("upload", data)})
        finally:
            if not ours:
                await client.aclose()

    async def fetch(self, url: str) -> httpx.Response:
        if url.startswith(self.running.settings.effective_public_url):
            return await self.client.get(url)
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.get(url)

    async def complete(self, person: Person, image_id: str) -> httpx.Response:
        return await self.client.post(f"/api/images/{image_id}/complete", headers=person.auth)

    async def outcome(self, person: Person, image_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The image once it is no longer pending (polls like a client)."""
        deadline = time.monotonic() + timeout
        while True:
            response = await self.client.get(f"/api/images/{image_id}", headers=person.auth)
            assert response.status_code == 200, response.text
            image: dict[str, Any] = response.json()
            if image["status"] != "pending":
                return image
            if time.monotonic() > deadline:
                raise TimeoutError(f"image {image_id} still pending after {timeout}s")
            await asyncio.sleep(0.05)

    async def upload(
        self,
        person: Person,
        data: bytes,
        content_type: str = "image/jpeg",
        purpose: str = "event_photo",
    ) -> dict[str, Any]:
        """Slot, upload, complete, and the outcome (ready or rejected)."""
        slot = await self.slot(person, data, content_type, purpose)
        sent = await self.send(slot["upload"], data)
        assert sent.status_code in (200, 201, 204), sent.text
        assert (await self.complete(person, slot["image_id"])).status_code == 202
        return await self.outcome(person, slot["image_id"])


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=list(itertools.product(DB_BACKENDS, STORAGE_BACKENDS)), ids=str
)
async def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ImagesApi]:
    """One Gatherly per test module, database backend and storage backend (its tests run in the module's loop)."""
    database, storage = request.param
    async with running_gatherly(
        tmp_path_factory.mktemp("images") / "data",
        database_backend=database,
        **FAST_SETTINGS,
        **storage_overrides(storage, request),
    ) as running:
        yield ImagesApi(running, storage)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=STORAGE_BACKENDS)
async def storage_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ImagesApi]:
    """The images service alone (its /media serves local storage's URLs) on each storage backend: the storage
    conformance suite's way in."""
    async with running_gatherly(
        tmp_path_factory.mktemp("storage") / "data", services=["images"], **storage_overrides(request.param, request)
    ) as running:
        yield ImagesApi(running, request.param)
