"""What the images service's entities are and the rules they obey: no I/O, no framework.

An image's life: a slot is made for a purpose, type and size (`awaiting_upload`); the owner uploads the bytes
straight to storage and calls complete (`processing`); the processing task checks and re-encodes them (`ready`, or
`rejected` with a reason). A slot never completed is rejected when it expires; the owner may delete the image
(`deleted`). Only the owner sees or changes an image through the API: anyone else gets 404, as if it did not exist.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NewType

from gatherly.kernel.errors import Conflict, DomainError, InvalidInput, NotFound

ImageId = NewType("ImageId", str)
UserId = NewType("UserId", str)

MiB = 1024 * 1024


class Purpose(StrEnum):
    AVATAR = "avatar"
    GROUP_BANNER = "group_banner"
    EVENT_COVER = "event_cover"
    EVENT_PHOTO = "event_photo"


# The largest upload each purpose takes: an avatar is shown small, an event photo may be a full camera JPEG.
MAX_BYTES: dict[Purpose, int] = {
    Purpose.AVATAR: 5 * MiB,
    Purpose.GROUP_BANNER: 10 * MiB,
    Purpose.EVENT_COVER: 10 * MiB,
    Purpose.EVENT_PHOTO: 15 * MiB,
}

# Accepted uploads, by declared content type: the name of the format the file's first bytes must show.
ACCEPTED_TYPES: dict[str, str] = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
}

# A processing attempt that neither finished nor failed cleanly (a crashed process) is taken again after this.
CLAIM_SECONDS = 120
# A storage whose clock runs behind ours may still take an upload this long after its slot expired.
UPLOAD_CLOCK_MARGIN = timedelta(minutes=1)
# Attempts that failed for a reason outside the file (storage down, a crash) before the image is given up on.
MAX_ATTEMPTS = 5
# Objects the storage refused to delete (one object's permissions or lock) are tried again after this.
GARBAGE_RETRY = timedelta(minutes=10)


class Status(StrEnum):
    AWAITING_UPLOAD = "awaiting_upload"
    PROCESSING = "processing"
    READY = "ready"
    REJECTED = "rejected"
    DELETED = "deleted"

    @property
    def shown_as(self) -> str:
        """The API's three states: pending until the outcome is known."""
        return "pending" if self in (Status.AWAITING_UPLOAD, Status.PROCESSING) else self.value


class Variant(StrEnum):
    """The re-encoded copies of an image (WebP); the original is never served."""

    THUMB = "thumb"  # square crop
    MEDIUM = "medium"
    LARGE = "large"


# The longest side of each variant in pixels (the thumb is a square of this side). Smaller images are not enlarged.
VARIANT_SIDES: dict[Variant, int] = {Variant.THUMB: 160, Variant.MEDIUM: 640, Variant.LARGE: 1600}


# --- errors --------------------------------------------------------------------------------------------------------


class ImageNotFound(NotFound):
    def __init__(self, image_id: str) -> None:
        super().__init__(f"No image {image_id!r} of yours.")


class NotYourUpload(DomainError):
    status = 403
    title = "Forbidden"


class UploadNotCompletable(Conflict):
    """complete was called on an image that is not waiting for its upload, or whose slot has expired."""


class TooManyOpenUploads(DomainError):
    """A person holds as many unfinished uploads (slots still open, files still processing) as one may."""

    status = 429
    title = "Too many open uploads"


def check_open_uploads(open_uploads: int, limit: int) -> None:
    """A slot reserves storage for its file until it expires: a cap per person keeps one account from filling the
    disk or bucket with slots (0: no cap)."""
    if limit and open_uploads >= limit:
        raise TooManyOpenUploads(
            f"You have {open_uploads} unfinished uploads, the most one person may have; complete or delete one, "
            "or wait until a slot expires."
        )


class NothingUploaded(Conflict):
    """complete was called before the bytes reached storage."""


class Rejection(Exception):
    """The file is refused; `reason` is told to its owner (GET /api/images/{id}) and in image.rejected."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- keys in storage ------------------------------------------------------------------------------------------------


def original_key(image_id: str) -> str:
    """Where the upload lands: never served, deleted once the image is processed."""
    return f"uploads/{image_id}"


def variant_key(image_id: str, variant: Variant) -> str:
    return f"images/{image_id}/{variant.value}.webp"


def export_key(export_id: str) -> str:
    """Where a data export's archive is written: served only through a signed link, deleted when it expires."""
    return f"exports/{export_id}.zip"


# --- the image -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    purpose: Purpose
    content_type: str
    size_bytes: int


def check_slot(purpose: Purpose, content_type: str, size_bytes: int) -> Slot:
    """What an upload may be: an accepted type, at least one byte, at most the purpose's limit."""
    if content_type not in ACCEPTED_TYPES:
        accepted = ", ".join(ACCEPTED_TYPES)
        raise InvalidInput(f"content_type must be one of {accepted}.", field="content_type")
    if size_bytes < 1:
        raise InvalidInput("size_bytes must be at least 1.", field="size_bytes")
    if size_bytes > MAX_BYTES[purpose]:
        raise InvalidInput(
            f"An image for {purpose.value} may be at most {MAX_BYTES[purpose]} bytes; this one is {size_bytes}.",
            field="size_bytes",
        )
    return Slot(purpose, content_type, size_bytes)


@dataclass(frozen=True)
class Image:
    id: ImageId
    owner_id: UserId
    purpose: Purpose
    content_type: str
    size_bytes: int
    status: Status
    created_at: datetime
    upload_expires_at: datetime
    reason: str | None = None
    variants: dict[Variant, str] = field(default_factory=dict)  # variant → storage key
    width: int | None = None
    height: int | None = None
    attempts: int = 0
    claimed_until: datetime | None = None
    finished_at: datetime | None = None
    # Objects of this image that are no longer needed and not yet deleted from storage.
    garbage: tuple[str, ...] = ()
    # When the original must be deleted once more: the image finished while its upload URL still worked, and a
    # replay of that URL would otherwise leave an object nobody deletes.
    original_sweep_at: datetime | None = None
    # Storage refused to delete some of its garbage: not tried again before this, so it never holds up the others.
    garbage_retry_at: datetime | None = None

    def visible_to(self, person: str) -> bool:
        return self.owner_id == person and self.status is not Status.DELETED

    def complete(self, *, now: datetime) -> Image:
        if self.status is not Status.AWAITING_UPLOAD:
            raise UploadNotCompletable(f"Image {self.id} is {self.status.shown_as}, not waiting for its upload.")
        if now >= self.upload_expires_at:
            raise UploadNotCompletable(f"The upload slot of image {self.id} has expired; ask for a new one.")
        return replace(self, status=Status.PROCESSING, claimed_until=None)

    def claim(self, *, now: datetime) -> Image:
        """A processing attempt starts: the claim keeps other processes off it until it ends or times out."""
        return replace(self, attempts=self.attempts + 1, claimed_until=now + timedelta(seconds=CLAIM_SECONDS))

    @property
    def out_of_attempts(self) -> bool:
        return self.attempts >= MAX_ATTEMPTS

    def give_up(self, *, now: datetime) -> Image:
        return self.reject(f"could not be processed after {self.attempts} attempts", now=now)

    def retry_later(self, *, now: datetime) -> Image:
        """An attempt failed for a reason outside the file: back off (doubling), or give up after MAX_ATTEMPTS."""
        if self.out_of_attempts:
            return self.give_up(now=now)
        backoff = timedelta(seconds=min(300, 2 ** (self.attempts - 1)))
        return replace(self, claimed_until=now + backoff)

    def make_ready(self, variants: dict[Variant, str], width: int, height: int, *, now: datetime) -> Image:
        return replace(
            self,
            status=Status.READY,
            variants=dict(variants),
            width=width,
            height=height,
            finished_at=now,
            claimed_until=None,
            garbage=(*self.garbage, original_key(self.id)),
            original_sweep_at=self._original_sweep_at(now),
        )

    def reject(self, reason: str, *, now: datetime) -> Image:
        return replace(
            self,
            status=Status.REJECTED,
            reason=reason,
            finished_at=now,
            claimed_until=None,
            garbage=(*self.garbage, original_key(self.id)),
            original_sweep_at=self._original_sweep_at(now),
        )

    def expire(self, *, now: datetime) -> Image:
        return self.reject("the upload was not completed before its slot expired", now=now)

    def delete(self, *, now: datetime) -> Image:
        if self.status is Status.DELETED:
            raise ImageNotFound(self.id)
        keys = [original_key(self.id), *self.variants.values()]
        return replace(
            self,
            status=Status.DELETED,
            finished_at=now,
            claimed_until=None,
            garbage=tuple(dict.fromkeys((*self.garbage, *keys))),
            original_sweep_at=self._original_sweep_at(now),
        )

    def _original_sweep_at(self, now: datetime) -> datetime | None:
        if self.original_sweep_at is not None:
            return self.original_sweep_at
        return self.upload_expires_at + UPLOAD_CLOCK_MARGIN if now < self.upload_expires_at else None

    def sweep_original(self) -> Image:
        """The upload URL has expired: whatever a replay of it left is deleted, and then nothing more can come."""
        return replace(
            self, garbage=tuple(dict.fromkeys((*self.garbage, original_key(self.id)))), original_sweep_at=None
        )

    def discard(self, keys: Sequence[str]) -> Image:
        """Objects written for this image that it will not use (an attempt that lost its claim)."""
        return replace(self, garbage=tuple(dict.fromkeys((*self.garbage, *keys))))

    def holds_claim(self, claimed: Image) -> bool:
        """Still processing under the claim `claimed` was given (not deleted, not taken over after a timeout)."""
        return self.status is Status.PROCESSING and self.claimed_until == claimed.claimed_until

    def collected(self, keys: Sequence[str]) -> Image:
        return replace(self, garbage=tuple(k for k in self.garbage if k not in keys), garbage_retry_at=None)

    def garbage_refused(self, deleted: Sequence[str], *, now: datetime) -> Image:
        """Storage deleted `deleted` and refused the rest (its permissions, a lock): the rest is tried later."""
        return replace(self.collected(deleted), garbage_retry_at=now + GARBAGE_RETRY)


# --- data exports -----------------------------------------------------------------------------------------------------

# A part's files are named "<service>/<name>.json": anything else is not put in an archive (a zip entry's name is a
# path on the person's disk once unpacked).
EXPORT_FILE_NAME = re.compile(r"^([a-z_]+)/[a-z_]+\.json$")
# The largest variant of a picture goes into the archive (the original is deleted once processed); it is at most
# 1600 px a side, so far below this.
EXPORT_PICTURE_LIMIT = 20 * MiB


class ExportStatus(StrEnum):
    COLLECTING = "collecting"  # waiting for the request and every part
    READY = "ready"  # the archive is in storage until expires_at
    EXPIRED = "expired"  # the archive was deleted
    ABANDONED = "abandoned"  # a part never came: its parts were dropped (the users service failed the export)


@dataclass(frozen=True)
class ExportJob:
    """A data export with the request and every part in: its archive is to be written."""

    id: str
    user_id: UserId


def export_files(service: str, files: dict[str, object]) -> dict[str, object]:
    """The files of `service`'s part that may go into an archive: named under the service's own folder."""
    kept: dict[str, object] = {}
    for name, document in files.items():
        match = EXPORT_FILE_NAME.match(name)
        if match and match.group(1) == service:
            kept[name] = document
    return kept
