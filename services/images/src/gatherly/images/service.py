"""Use cases of the images service: one function per thing a person (or the processing task) does, state and outbox
committed together.

Storage is never touched inside a transaction: a use case decides and commits, then reads or writes objects, then
commits the outcome. Records are locked (`get_for_update`) where a decision depends on the status, because
completing, processing, expiring and deleting one image may race; the processing claim keeps two processes from
working on the same upload."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from gatherly.contracts.images import ImageDeleted, ImageReady, ImageRejected
from gatherly.contracts.users import (
    ImageVariants,
    UserDeleted,
    UserDeletionStepDone,
    UserExportArchiveReady,
    UserExportPartReady,
    UserExportRequested,
)
from gatherly.images import imaging
from gatherly.images.archives import Picture, build_archive
from gatherly.images.domain import (
    EXPORT_PICTURE_LIMIT,
    ExportStatus,
    Image,
    ImageId,
    ImageNotFound,
    Purpose,
    Rejection,
    Slot,
    Status,
    UserId,
    Variant,
    check_open_uploads,
    export_files,
    export_key,
    original_key,
    variant_key,
)
from gatherly.images.storage import PRIVATE, ObjectStorage, StorageUnavailable, UploadRefused, UploadTarget
from gatherly.images.store import ImagesUnitOfWork, Stores
from gatherly.kernel.revocation import RevocationChange
from gatherly.kernel.runtime import ServiceContext
from gatherly.kernel.settings import Settings

# Keys of ServiceContext.extras, filled when the service starts (__init__.py).
STORAGE = "storage"
UPLOADS_COMPLETED = "uploads_completed"  # an asyncio.Event: wakes the processing task
GARBAGE_LISTED = "garbage_listed"  # an asyncio.Event: wakes the tidy task


def storage_of(context: ServiceContext) -> ObjectStorage:
    storage: ObjectStorage = context.extras[STORAGE]
    return storage


def wake_processing(context: ServiceContext) -> None:
    _wake(context, UPLOADS_COMPLETED)


def wake_tidying(context: ServiceContext) -> None:
    _wake(context, GARBAGE_LISTED)


def _wake(context: ServiceContext, name: str) -> None:
    event: asyncio.Event | None = context.extras.get(name)
    if event is not None:
        event.set()


@dataclass(frozen=True)
class ImageView:
    image: Image
    variant_urls: ImageVariants | None


@dataclass(frozen=True)
class NewUpload:
    image: Image
    target: UploadTarget


@dataclass(frozen=True)
class UrlPolicy:
    """How variant URLs are made: signed for `ttl_seconds`, or public (S3 with a public base URL) for the purposes
    in `public` — avatars and banners are shown to anyone, an event photo may belong to a members-only group."""

    ttl_seconds: int
    public: frozenset[Purpose]

    @classmethod
    def of(cls, settings: Settings) -> UrlPolicy:
        return cls(settings.image_url_ttl_seconds, frozenset(map(Purpose, settings.s3_public_purposes)))


def variant_urls(image: Image, storage: ObjectStorage, *, now: datetime, urls: UrlPolicy) -> ImageVariants | None:
    if image.status is not Status.READY:
        return None
    expires_at = now + timedelta(seconds=urls.ttl_seconds)
    private = image.purpose not in urls.public
    return ImageVariants(
        **{
            variant.value: storage.download_url(key, expires_at=expires_at, private=private)
            for variant, key in image.variants.items()
        }
    )


async def request_upload(
    uow: ImagesUnitOfWork, storage: ObjectStorage, owner: UserId, slot: Slot, *, ttl_seconds: int, open_limit: int
) -> NewUpload:
    """A slot: the record waits for its upload, the client gets a signed target for exactly this type and size."""
    async with uow:
        now = uow.clock.now()
        check_open_uploads(await uow.images.count_open(owner, now), open_limit)
        image = Image(
            id=ImageId(str(uuid.uuid4())),
            owner_id=owner,
            purpose=slot.purpose,
            content_type=slot.content_type,
            size_bytes=slot.size_bytes,
            status=Status.AWAITING_UPLOAD,
            created_at=now,
            upload_expires_at=now + timedelta(seconds=ttl_seconds),
        )
        await uow.images.add(image)
    target = await storage.upload_target(
        original_key(image.id),
        content_type=image.content_type,
        size=image.size_bytes,
        expires_at=image.upload_expires_at,
    )
    return NewUpload(image, target)


async def complete_upload(uow: ImagesUnitOfWork, image_id: str, person: UserId) -> Image:
    """The owner says the bytes are in storage: the image waits for the processing task."""
    async with uow:
        image = await uow.images.get_for_update(image_id)
        if image is None or not image.visible_to(person):
            raise ImageNotFound(image_id)
        completed = image.complete(now=uow.clock.now())
        await uow.images.save(completed)
        return completed


async def view_image(
    stores: Stores, storage: ObjectStorage, image_id: str, person: UserId, *, now: datetime, urls: UrlPolicy
) -> ImageView:
    image = await stores.images.get(image_id)
    if image is None or not image.visible_to(person):
        raise ImageNotFound(image_id)
    return ImageView(image, variant_urls(image, storage, now=now, urls=urls))


async def delete_image(uow: ImagesUnitOfWork, image_id: str, person: UserId) -> None:
    """The owner deletes the image: read models drop it (image.deleted), its objects are deleted by the tidy task."""
    async with uow:
        image = await uow.images.get_for_update(image_id)
        if image is None or not image.visible_to(person):
            raise ImageNotFound(image_id)
        await uow.images.save(image.delete(now=uow.clock.now()))
        uow.publish(ImageDeleted(image_id=image.id, owner_id=image.owner_id))


async def delete_images_of(uow: ImagesUnitOfWork, deleted: UserDeleted) -> dict[str, int]:
    """The images service's step of the account-deletion saga (user.deleted): each of the person's images, whatever
    its purpose or status, is deleted and announced (image.deleted, for the read models); its objects are listed as
    garbage, which the tidy task deletes with its retries. With the saga's `deletion_id` the reply
    (user_deletion.step_done) commits with the records marked deleted, before the objects are gone. Inside the
    consumer's unit of work; a repeated message finds nothing left to delete and replies again. Returns how many
    images went, by purpose."""
    now = uow.clock.now()
    what: Counter[str] = Counter()
    for image in await uow.images.owned_by(deleted.user_id):
        await uow.images.save(image.delete(now=now))
        uow.publish(ImageDeleted(image_id=image.id, owner_id=image.owner_id))
        what[image.purpose.value] += 1
    # Their data exports too: an archive (profile, memberships, RSVPs…) must not outlive the account by its link's
    # two days, nor one still collecting be written after it. The deletion is recorded here as well (the kernel's
    # consumer of it may come later), so a request or part arriving after this step is not kept.
    await uow.revocations.apply(RevocationChange.of(deleted), now)
    await uow.exports.forget_person(deleted.user_id, now)
    if deleted.deletion_id is not None:
        uow.publish(
            UserDeletionStepDone(
                user_id=deleted.user_id, deletion_id=deleted.deletion_id, service="images", what=dict(what), done_at=now
            )
        )
    return dict(what)


# --- processing (run by tasks.process_uploads) ----------------------------------------------------------------------


def _rejected(image: Image) -> ImageRejected:
    return ImageRejected(
        image_id=image.id, owner_id=image.owner_id, purpose=image.purpose.value, reason=image.reason or ""
    )


async def _claim(uow: ImagesUnitOfWork) -> Image | None:
    """The next upload, claimed for one attempt; or, when every attempt so far ended without an outcome (the
    process crashed, or the attempt raised something unforeseen), that upload rejected: it is not tried forever."""
    async with uow:
        image = await uow.images.next_to_process(uow.clock.now())
        if image is None:
            return None
        if image.out_of_attempts:
            given_up = image.give_up(now=uow.clock.now())
            await uow.images.save(given_up)
            uow.publish(_rejected(given_up))
            return given_up
        claimed = image.claim(now=uow.clock.now())
        await uow.images.save(claimed)
        return claimed


async def _read_upload(storage: ObjectStorage, image: Image) -> bytes:
    try:
        data = await storage.read(original_key(image.id), limit=image.size_bytes)
    except UploadRefused as too_large:
        raise Rejection(f"more bytes were uploaded than the {image.size_bytes} the slot was for") from too_large
    if data is None:
        raise Rejection("no file was uploaded")
    if len(data) != image.size_bytes:
        raise Rejection(f"{len(data)} bytes were uploaded, {image.size_bytes} were declared")
    return data


async def process_next(uow: ImagesUnitOfWork, storage: ObjectStorage, *, urls: UrlPolicy) -> Image | None:
    """Process the next completed upload, if any: ready with its variants, or rejected with the reason. Returns the
    outcome. A storage failure leaves it to be tried again after a backoff, and is raised (StorageUnavailable)."""
    image = await _claim(uow)
    if image is None or image.status is not Status.PROCESSING:
        return image
    written: list[str] = []
    try:
        data = await _read_upload(storage, image)
        # Pillow off the event loop: one large picture must not stall the requests this process serves.
        processed = await asyncio.to_thread(imaging.process, data, image.content_type)
        del data
        keys = {variant: variant_key(image.id, variant) for variant in Variant}
        for variant, key in keys.items():
            await storage.write(key, processed.variants[variant], content_type="image/webp")
            written.append(key)
    except Rejection as rejection:
        return await _reject(uow, image, rejection.reason)
    except StorageUnavailable:
        await _try_later(uow, image, written)
        raise
    return await _make_ready(uow, image, keys, (processed.width, processed.height), storage, urls=urls)


async def _reject(uow: ImagesUnitOfWork, claimed: Image, reason: str) -> Image:
    async with uow:
        image = await uow.images.get_for_update(claimed.id)
        assert image is not None
        if image.holds_claim(claimed):
            image = image.reject(reason, now=uow.clock.now())
            await uow.images.save(image)
            uow.publish(_rejected(image))
        return image


async def _make_ready(
    uow: ImagesUnitOfWork,
    claimed: Image,
    variants: dict[Variant, str],
    size: tuple[int, int],
    storage: ObjectStorage,
    *,
    urls: UrlPolicy,
) -> Image:
    async with uow:
        now = uow.clock.now()
        image = await uow.images.get_for_update(claimed.id)
        assert image is not None
        if not image.holds_claim(claimed):
            # The claim ran out and a newer attempt owns the image: it writes the same keys and decides on them, so
            # listing them as garbage here would delete its variants.
            if image.status is Status.PROCESSING:
                return image
            # Deleted or finished meanwhile: what we wrote and the image does not use is not needed.
            await uow.images.save(image.discard([k for k in variants.values() if k not in image.variants.values()]))
            return image
        image = image.make_ready(variants, *size, now=now)
        await uow.images.save(image)
        made = variant_urls(image, storage, now=now, urls=urls)
        assert made is not None
        ready = ImageReady(
            image_id=image.id, owner_id=image.owner_id, purpose=image.purpose.value, variants=made, ready_at=now
        )
        uow.publish(ready)
        return image


async def _try_later(uow: ImagesUnitOfWork, claimed: Image, written: list[str]) -> None:
    async with uow:
        image = await uow.images.get_for_update(claimed.id)
        if image is None or not image.holds_claim(claimed):
            return
        later = image.retry_later(now=uow.clock.now())
        if later.status is Status.REJECTED:
            later = later.discard(written)
            uow.publish(_rejected(later))
        await uow.images.save(later)


# --- housekeeping (run by tasks.keep_storage_tidy) ------------------------------------------------------------------

SWEEP_BATCH = 100


async def expire_uploads(uow: ImagesUnitOfWork) -> int:
    """Slots whose time ran out without complete are rejected; their objects (if any came) become garbage."""
    async with uow:
        now = uow.clock.now()
        overdue = await uow.images.overdue_uploads(now, SWEEP_BATCH)
        for image in overdue:
            expired = image.expire(now=now)
            await uow.images.save(expired)
            uow.publish(_rejected(expired))
        return len(overdue)


async def sweep_originals(uow: ImagesUnitOfWork) -> int:
    """Images that finished while their upload URL still worked: once it has expired, their original is listed as
    garbage again, so a replayed upload does not stay in storage for ever."""
    async with uow:
        due = await uow.images.originals_to_sweep(uow.clock.now(), SWEEP_BATCH)
        for image in due:
            await uow.images.save(image.sweep_original())
        return len(due)


async def collect_garbage(uow: ImagesUnitOfWork, storage: ObjectStorage) -> Collected:
    """Delete objects nobody needs any more (originals after processing, everything of a deleted image). The keys
    stay listed until storage confirms, so a failure is retried at the next round, never forgotten; an object the
    storage refuses on its own puts its image's garbage aside for a while, so it never holds up the others."""
    async with uow:
        batch = await uow.images.with_garbage(uow.clock.now(), SWEEP_BATCH)
    keys = [key for image in batch for key in image.garbage]
    if not keys:
        return Collected(0, {})
    refused = await storage.delete(keys)
    async with uow:
        now = uow.clock.now()
        for done in batch:
            image = await uow.images.get_for_update(done.id)
            if image is None:
                continue
            deleted = [key for key in done.garbage if key not in refused]
            if len(deleted) < len(done.garbage):
                await uow.images.save(image.garbage_refused(deleted, now=now))
            else:
                await uow.images.save(image.collected(deleted))
    return Collected(len(keys) - len(refused), refused)


@dataclass(frozen=True)
class Collected:
    """What a round of garbage collection did: objects deleted, and the ones storage refused with its reasons."""

    deleted: int
    refused: dict[str, str]


# --- data exports (the users service's saga; the archive is written by tasks.write_export_archives) -----------------

# While one process writes an export's archive, others leave it alone this long (then it is taken over); when
# storage fails, the export is tried again after ARCHIVE_RETRY.
ARCHIVE_CLAIM = timedelta(minutes=10)
ARCHIVE_RETRY = timedelta(seconds=30)


async def note_export_request(uow: ImagesUnitOfWork, event: UserExportRequested) -> None:
    if await _settled(uow, event.export_id, event.user_id):
        return
    await uow.exports.note_request(event.export_id, event.user_id, uow.clock.now())


async def keep_export_part(uow: ImagesUnitOfWork, event: UserExportPartReady) -> None:
    """A service's part, kept until the archive is written (only files named under its own folder); not for an
    export already written or abandoned (a part arriving after the person's deletion is not kept)."""
    if await _settled(uow, event.export_id, event.user_id):
        return
    files = export_files(event.service, event.files)
    await uow.exports.add_part(event.export_id, event.user_id, event.service, files, uow.clock.now())


async def _settled(uow: ImagesUnitOfWork, export_id: str, user_id: str) -> bool:
    """Whether the export is past collecting (written or abandoned), or its person deleted. The export's row is
    locked first, so a deletion of the person running at the same moment is either seen here or waits for this."""
    if (await uow.exports.status_of(export_id, locked=True)) not in (None, ExportStatus.COLLECTING):
        return True
    return await _deleted(uow, user_id)


async def _deleted(uow: ImagesUnitOfWork, user_id: str) -> bool:
    revocation = await uow.revocations.get(user_id)
    return revocation is not None and revocation.deleted


async def write_next_archive(uow: ImagesUnitOfWork, storage: ObjectStorage, *, link_ttl: int) -> str | None:
    """Write the archive of one export whose parts are all in: the parts' files and the person's pictures in one
    zip, then `user_export.archive_ready` with a signed link that works for `link_ttl` seconds. Returns the
    export's id (None when none was waiting); one whose person was deleted meanwhile is dropped, not written.
    When storage fails, the export is tried again after ARCHIVE_RETRY."""
    async with uow:
        now = uow.clock.now()
        job = await uow.exports.next_to_assemble(now)
        if job is None:
            return None
        if await _deleted(uow, job.user_id):  # the account went while its parts were coming in
            await uow.exports.forget_person(job.user_id, now)
            return job.id
        await uow.exports.claim(job.id, now + ARCHIVE_CLAIM)
        parts = await uow.exports.parts_of(job)
        images = await uow.images.ready_of(job.user_id)
    files = {name: document for part in parts.values() for name, document in part.items()}
    key = export_key(job.id)
    try:
        pictures = []
        for image in images:
            data = await storage.read(image.variants[Variant.LARGE], limit=EXPORT_PICTURE_LIMIT)
            if data is not None:  # deleted meanwhile: not the person's any more
                pictures.append(
                    Picture(image.id, image.purpose.value, image.created_at, image.width, image.height, data)
                )
        archive = await asyncio.to_thread(build_archive, files, pictures, now)
        await storage.write(key, archive, content_type="application/zip", cache_control=PRIVATE)
    except StorageUnavailable:
        async with uow:
            await uow.exports.claim(job.id, uow.clock.now() + ARCHIVE_RETRY)
        raise
    async with uow:
        expires_at = uow.clock.now() + timedelta(seconds=link_ttl)
        if not await uow.exports.finish(job.id, key, len(archive), expires_at):
            # The account was deleted while the archive was being written: the tidy task deletes what was written.
            await uow.exports.note_abandoned_archive(job.id, key)
        else:
            uow.publish(
                UserExportArchiveReady(
                    user_id=job.user_id,
                    export_id=job.id,
                    download_url=storage.download_url(key, expires_at=expires_at, private=True),
                    expires_at=expires_at,
                    size_bytes=len(archive),
                )
            )
    return job.id


async def expire_exports(uow: ImagesUnitOfWork, storage: ObjectStorage, *, keep_collecting: timedelta) -> int:
    """Archives past their expiry are deleted from storage (kept listed until storage confirms); exports still
    collecting after `keep_collecting` (a part never came, and the saga has failed) drop their parts. Returns
    how many archives were deleted."""
    async with uow:
        now = uow.clock.now()
        await uow.exports.abandon_stale(now - keep_collecting)
        due = await uow.exports.expired_archives(now, SWEEP_BATCH)
    if not due:
        return 0
    refused = await storage.delete([key for _, key in due])
    async with uow:
        await uow.exports.mark_expired([export_id for export_id, key in due if key not in refused])
    return len(due) - len(refused)
