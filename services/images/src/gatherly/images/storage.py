"""Object storage for uploads and variants: one port, two adapters (local files, any S3 API), the same URL shapes.

Clients upload straight to storage through a signed, expiring target that fixes the content type and the exact
size, and browsers fetch variants through download URLs (signed and long-lived, or public under a CDN/bucket URL).
- LocalStorage keeps objects under `<data-dir>/media` and signs URLs with HMAC-SHA256; the images service serves
  them itself under `/media` (api.py), checking the signature, the expiry, the type and the size like S3 does.
- S3Storage uses boto3 (in worker threads) behind the kernel's retry and circuit breaker: presigned POST with a
  `Content-Type` and a `content-length-range` condition, presigned GET (or a public base URL) for downloads.
A storage that cannot be reached raises StorageUnavailable, an OSError: the processing task retries it later."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import math
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlencode

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from gatherly.kernel.errors import DomainError, Forbidden
from gatherly.kernel.files import private_directory, write_private
from gatherly.kernel.resilience import CircuitOpen, Resilience
from gatherly.kernel.settings import Settings, StorageBackend

T = TypeVar("T")

# SigV4 presigned URLs live at most 7 days; local download URLs get the same ceiling so both behave alike.
MAX_URL_SECONDS = 7 * 24 * 3600
# Keys this service writes: `uploads/<id>`, `images/<id>/<variant>.webp`, `exports/<id>.zip` (a person's data
# export). Anything else in a URL is refused.
KEY_PATTERN = re.compile(r"^(uploads/[0-9a-f-]{36}|images/[0-9a-f-]{36}/[a-z]+\.webp|exports/[0-9a-f-]{36}\.zip)$")
CACHE_FOREVER = "public, max-age=31536000, immutable"  # a variant never changes: a new image has a new id
PRIVATE = "private, no-store"  # a data export: nobody keeps a copy on the way


class StorageUnavailable(OSError):
    """The storage could not be reached or failed on its side; worth trying again later."""


class UploadRefused(DomainError):
    """What the local storage answers to a bad upload or download request (S3 answers these with 4xx too)."""

    status = 400
    title = "Upload refused"


class UrlRefused(Forbidden):
    """A signed URL that is tampered with, expired, or for another request (S3: 403)."""


@dataclass(frozen=True)
class UploadTarget:
    """Where and how the client sends the bytes: `method` PUT with `headers`, or POST as a multipart form with
    `fields` first and the file last (field name `file`)."""

    url: str
    method: str
    headers: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] | None = None


class ObjectStorage(Protocol):
    """The port: what the images service needs from a storage, and all it assumes (the conformance suite in
    tests/storage_conformance checks every adapter against it)."""

    async def upload_target(self, key: str, *, content_type: str, size: int, expires_at: datetime) -> UploadTarget:
        """A signed target that accepts exactly `size` bytes of `content_type` at `key` until `expires_at`."""
        ...

    async def read(self, key: str, *, limit: int) -> bytes | None:
        """The object's bytes (None when missing); raises UploadRefused when it is larger than `limit`."""
        ...

    async def write(self, key: str, data: bytes, *, content_type: str, cache_control: str = CACHE_FOREVER) -> None: ...

    async def delete(self, keys: Sequence[str]) -> dict[str, str]:
        """Delete the objects; a missing one is not an error (deleting is retried until it is done). Returns the
        keys the storage refused one by one, each with its reason; raises StorageUnavailable when it cannot be
        reached at all."""
        ...

    def download_url(self, key: str, *, expires_at: datetime, private: bool = False) -> str:
        """A URL that fetches the object until `expires_at`; `private` ones are always signed (never the public
        base URL of a CDN or bucket policy)."""
        ...

    async def check(self) -> None:
        """Raises when the storage cannot be used (readiness)."""
        ...


# --- local files ----------------------------------------------------------------------------------------------------


class LocalStorage:
    """Files under `root`; URLs under `<base_url>/media/<key>` signed with HMAC-SHA256 over what they allow."""

    def __init__(self, root: Path, base_url: str, signing_key: bytes, now: Callable[[], datetime]) -> None:
        self.root = private_directory(root)
        self.base_url = base_url.rstrip("/")
        self.signing_key = signing_key
        self.now = now  # the platform's clock, read at each check (tests move it)

    def _sign(self, *parts: str) -> str:
        digest = hmac.new(self.signing_key, "\n".join(parts).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def _path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    async def upload_target(self, key: str, *, content_type: str, size: int, expires_at: datetime) -> UploadTarget:
        self._path(key)
        expires = str(int(expires_at.timestamp()))
        signature = self._sign("PUT", key, content_type, str(size), expires)
        query = urlencode({"size": size, "expires": expires, "signature": signature})
        return UploadTarget(f"{self.base_url}/media/{quote(key)}?{query}", "PUT", {"Content-Type": content_type})

    def _check_signature(self, signature: str, *parts: str) -> None:
        if not hmac.compare_digest(signature.encode(), self._sign(*parts).encode()):
            raise UrlRefused("The URL's signature does not match: it was changed or is not ours.")

    def _check_expiry(self, expires: str) -> None:
        if not expires.isdigit() or int(expires) <= self.now().timestamp():
            raise UrlRefused("The URL has expired.")

    async def accept_upload(self, key: str, query: dict[str, str], content_type: str, body: bytes) -> None:
        """A PUT to an upload URL: stored only when the signature covers exactly this key, type and size."""
        if not KEY_PATTERN.match(key) or not key.startswith("uploads/"):
            raise UrlRefused("Uploads go to the URL the slot gave.")
        size, expires, signature = query.get("size", ""), query.get("expires", ""), query.get("signature", "")
        self._check_signature(signature, "PUT", key, content_type, size, expires)
        self._check_expiry(expires)
        if len(body) != int(size):
            raise UploadRefused(f"The slot takes exactly {size} bytes; {len(body)} were sent.", field="body")
        await self.write(key, body, content_type=content_type)

    def download_path(self, key: str, query: dict[str, str]) -> Path | None:
        """The file a signed download URL names (None when missing); raises UrlRefused for a bad URL."""
        if not KEY_PATTERN.match(key) or key.startswith("uploads/"):
            raise UrlRefused("Only image variants and data exports are served.")
        expires, signature = query.get("expires", ""), query.get("signature", "")
        self._check_signature(signature, "GET", key, expires)
        self._check_expiry(expires)
        path = self.root / key
        return path if path.is_file() else None

    async def read(self, key: str, *, limit: int) -> bytes | None:
        return await asyncio.to_thread(self._read, self._path(key), limit)

    @staticmethod
    def _read(path: Path, limit: int) -> bytes | None:
        try:
            with path.open("rb") as file:
                data = file.read(limit + 1)
        except FileNotFoundError:
            return None
        if len(data) > limit:
            raise UploadRefused(f"The object is larger than {limit} bytes.")
        return data

    async def write(self, key: str, data: bytes, *, content_type: str, cache_control: str = CACHE_FOREVER) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        private_directory(path.parent)
        # Written aside, then renamed: a reader never sees half a file, a crash leaves no torn object.
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        write_private(temporary, data)
        os.replace(temporary, path)

    async def delete(self, keys: Sequence[str]) -> dict[str, str]:
        paths = {key: self._path(key) for key in keys}
        return await asyncio.to_thread(self._unlink, paths)

    @staticmethod
    def _unlink(paths: Mapping[str, Path]) -> dict[str, str]:
        refused: dict[str, str] = {}
        for key, path in paths.items():
            try:
                path.unlink(missing_ok=True)
            except OSError as error:  # one file's permissions or type, not the disk: the others go on
                refused[key] = f"{type(error).__name__}: {error.strerror or error}"
        return refused

    def download_url(self, key: str, *, expires_at: datetime, private: bool = False) -> str:
        _check_key(key)
        expires = str(int(expires_at.timestamp()))
        # Digits and URL-safe base64 are what urlencode() would write of them: the query is put together as it is
        # (three URLs per image read; urlencode cost more than the signature).
        return f"{self.base_url}/media/{quote(key)}?expires={expires}&signature={self._sign('GET', key, expires)}"

    async def check(self) -> None:
        if not self.root.is_dir():
            raise StorageUnavailable(f"the media directory {self.root} is missing")


def _check_key(key: str) -> None:
    if not KEY_PATTERN.match(key):
        raise ValueError(f"not a storage key: {key!r}")


# --- S3 -------------------------------------------------------------------------------------------------------------


class S3Storage:
    """A bucket of any S3 API (AWS S3, MinIO, SeaweedFS). boto3 blocks, so each call runs in a worker thread,
    inside the kernel's retry and the `s3` circuit breaker."""

    def __init__(self, client: Any, bucket: str, resilience: Resilience, *, public_url: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.resilience = resilience
        self.public_url = public_url.rstrip("/")

    async def _call(self, operation: Callable[[], T]) -> T:
        try:
            return await self.resilience.call(
                "s3", lambda: asyncio.to_thread(operation), retry_on=(BotoCoreError, StorageUnavailable)
            )
        except (BotoCoreError, CircuitOpen) as error:  # cannot connect, timed out, or failing lately
            raise StorageUnavailable(f"S3 is unavailable: {error!r}") from error

    def _server_side(self, error: ClientError) -> StorageUnavailable:
        return StorageUnavailable(f"S3 answered {error.response.get('Error', {})!r}")

    async def upload_target(self, key: str, *, content_type: str, size: int, expires_at: datetime) -> UploadTarget:
        seconds = _seconds_until(expires_at)
        post = self.client.generate_presigned_post(
            self.bucket,
            key,
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", size, size]],
            ExpiresIn=seconds,
        )
        return UploadTarget(post["url"], "POST", {}, {name: str(value) for name, value in post["fields"].items()})

    async def read(self, key: str, *, limit: int) -> bytes | None:
        def get() -> bytes | None:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise self._server_side(error) from error
            body = response["Body"]
            try:
                if int(response.get("ContentLength", 0)) > limit:
                    raise UploadRefused(f"The object is larger than {limit} bytes.")
                data: bytes = body.read(limit + 1)
            finally:
                body.close()
            if len(data) > limit:
                raise UploadRefused(f"The object is larger than {limit} bytes.")
            return data

        return await self._call(get)

    async def write(self, key: str, data: bytes, *, content_type: str, cache_control: str = CACHE_FOREVER) -> None:
        def put() -> None:
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, CacheControl=cache_control
                )
            except ClientError as error:
                raise self._server_side(error) from error

        await self._call(put)

    async def delete(self, keys: Sequence[str]) -> dict[str, str]:
        def remove() -> dict[str, str]:
            refused: dict[str, str] = {}
            for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1,000 keys
                batch = [{"Key": key} for key in keys[start : start + 1000]]
                try:
                    answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                except ClientError as error:
                    raise self._server_side(error) from error
                refused |= refusals(answer)
            return refused

        if not keys:
            return {}
        refused: dict[str, str] = await self._call(remove)
        return refused

    def download_url(self, key: str, *, expires_at: datetime, private: bool = False) -> str:
        if self.public_url and not private:
            return f"{self.public_url}/{quote(key)}"
        seconds = min(MAX_URL_SECONDS, _seconds_until(expires_at))
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=seconds
        )
        return url

    async def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (a development server starts empty). Replicas starting together
        may each find it missing: the one that creates it second is told it already owns it, which is fine."""

        def ensure() -> None:
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                    raise self._server_side(error) from error
                with contextlib.suppress(self.client.exceptions.BucketAlreadyOwnedByYou):
                    self.client.create_bucket(Bucket=self.bucket)

        await self._call(ensure)

    async def check(self) -> None:
        def head() -> None:
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as error:
                raise self._server_side(error) from error

        await self._call(head)


def _seconds_until(moment: datetime) -> int:
    # Presigned S3 requests carry a lifetime, not a deadline, counted from a signing time cut to the whole second:
    # count it from that second and round up, so the URL never dies before `moment` (at most a second after it).
    return max(1, math.ceil(moment.timestamp() - math.floor(time.time())))


# --- building one from settings -------------------------------------------------------------------------------------


def local_signing_key(settings: Settings) -> bytes:
    """GATHERLY_STORAGE_SIGNING_KEY, or a random key kept (0600) in the data directory so URLs outlive restarts."""
    if configured := settings.storage_signing_key.get_secret_value():
        return configured.encode()
    path = settings.data_dir / "media-signing.key"
    if not path.exists():
        private_directory(settings.data_dir)
        write_private(path, secrets.token_bytes(32))
    return path.read_bytes()


def s3_client(settings: Settings) -> Any:
    config = Config(
        signature_version="s3v4",
        connect_timeout=5,
        read_timeout=30,
        retries={"mode": "standard", "max_attempts": 3},
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
    )
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url or None,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id or None,
        aws_secret_access_key=settings.s3_secret_access_key.get_secret_value() or None,
        config=config,
    )


async def build_storage(settings: Settings, resilience: Resilience, now: Callable[[], datetime]) -> ObjectStorage:
    if settings.storage_backend is StorageBackend.S3:
        storage = S3Storage(s3_client(settings), settings.s3_bucket, resilience, public_url=settings.s3_public_url)
        await storage.ensure_bucket()
        return storage
    return LocalStorage(settings.data_dir / "media", settings.effective_public_url, local_signing_key(settings), now)


def refusals(answer: Mapping[str, Any]) -> dict[str, str]:
    """The keys a DeleteObjects answer lists under Errors (one object's permissions, a lock), with S3's reason."""
    return {
        error["Key"]: f"{error.get('Code', 'Error')}: {error.get('Message', '')}".rstrip(": ")
        for error in answer.get("Errors", [])
    }
