"""The images service's rules, without a database: what a slot may be, and an image's life."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gatherly.images.domain import (
    CLAIM_SECONDS,
    GARBAGE_RETRY,
    MAX_ATTEMPTS,
    MAX_BYTES,
    Image,
    ImageId,
    ImageNotFound,
    Purpose,
    Status,
    TooManyOpenUploads,
    UploadNotCompletable,
    UserId,
    Variant,
    check_open_uploads,
    check_slot,
    original_key,
    variant_key,
)
from gatherly.kernel.errors import InvalidInput

NOON = datetime(2026, 6, 1, 12, tzinfo=UTC)


def an_image(**changes: object) -> Image:
    values: dict[str, object] = {
        "id": ImageId("3f1c2a7e-0000-4000-8000-000000000001"),
        "owner_id": UserId("ann"),
        "purpose": Purpose.AVATAR,
        "content_type": "image/png",
        "size_bytes": 1000,
        "status": Status.AWAITING_UPLOAD,
        "created_at": NOON,
        "upload_expires_at": NOON + timedelta(minutes=30),
        **changes,
    }
    return Image(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("purpose", "content_type", "size", "field"),
    [
        (Purpose.AVATAR, "image/svg+xml", 10, "content_type"),
        (Purpose.AVATAR, "image/jpeg", 0, "size_bytes"),
        (Purpose.AVATAR, "image/jpeg", MAX_BYTES[Purpose.AVATAR] + 1, "size_bytes"),
        (Purpose.EVENT_PHOTO, "image/jpeg", MAX_BYTES[Purpose.EVENT_PHOTO] + 1, "size_bytes"),
    ],
)
def test_a_slot_outside_the_rules_is_refused_naming_the_field(
    purpose: Purpose, content_type: str, size: int, field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_slot(purpose, content_type, size)
    assert refused.value.field == field


def test_avatars_are_smaller_than_event_photos() -> None:
    assert MAX_BYTES[Purpose.AVATAR] < MAX_BYTES[Purpose.EVENT_PHOTO]
    assert check_slot(Purpose.EVENT_PHOTO, "image/webp", MAX_BYTES[Purpose.AVATAR] + 1).size_bytes > 0


def test_complete_is_allowed_once_and_only_before_the_slot_expires() -> None:
    completed = an_image().complete(now=NOON)
    assert completed.status is Status.PROCESSING
    with pytest.raises(UploadNotCompletable):
        completed.complete(now=NOON)
    with pytest.raises(UploadNotCompletable):
        an_image().complete(now=NOON + timedelta(minutes=30))


def test_an_image_is_seen_by_its_owner_only_and_not_once_deleted() -> None:
    image = an_image()
    assert image.visible_to("ann") and not image.visible_to("bob")
    assert not image.delete(now=NOON).visible_to("ann")
    with pytest.raises(ImageNotFound):
        image.delete(now=NOON).delete(now=NOON)


def test_a_failed_attempt_backs_off_doubling_then_gives_up_with_a_reason() -> None:
    image = an_image(status=Status.PROCESSING)
    waits = []
    for _ in range(MAX_ATTEMPTS - 1):
        image = image.claim(now=NOON).retry_later(now=NOON)
        assert image.status is Status.PROCESSING
        assert image.claimed_until is not None
        waits.append((image.claimed_until - NOON).total_seconds())
    assert waits == [1, 2, 4, 8]
    given_up = image.claim(now=NOON).retry_later(now=NOON)
    assert given_up.status is Status.REJECTED and "after 5 attempts" in (given_up.reason or "")
    assert original_key(image.id) in given_up.garbage


def test_a_claim_is_held_until_it_times_out_or_the_image_changes() -> None:
    claimed = an_image(status=Status.PROCESSING).claim(now=NOON)
    assert claimed.claimed_until == NOON + timedelta(seconds=CLAIM_SECONDS)
    assert claimed.holds_claim(claimed)
    assert not claimed.claim(now=NOON + timedelta(seconds=CLAIM_SECONDS)).holds_claim(claimed)
    assert not claimed.delete(now=NOON).holds_claim(claimed)


def test_ready_keeps_the_variants_and_lists_the_original_for_deletion_and_delete_lists_everything() -> None:
    variants = {variant: variant_key("i", variant) for variant in Variant}
    ready = an_image(status=Status.PROCESSING).make_ready(variants, 10, 20, now=NOON)
    assert ready.status is Status.READY and ready.variants == variants
    assert ready.garbage == (original_key(ready.id),)
    deleted = ready.collected(ready.garbage).delete(now=NOON)
    assert set(deleted.garbage) == {original_key(ready.id), *variants.values()}
    assert deleted.collected(deleted.garbage).garbage == ()


def test_garbage_the_storage_refused_waits_its_retry_and_collecting_the_rest_clears_it() -> None:
    deleted = an_image(status=Status.READY, variants={Variant.THUMB: "t"}).delete(now=NOON)
    original = original_key(deleted.id)
    refused = deleted.garbage_refused([original], now=NOON)
    assert refused.garbage == ("t",) and refused.garbage_retry_at == NOON + GARBAGE_RETRY
    assert refused.collected(["t"]).garbage == () and refused.collected(["t"]).garbage_retry_at is None


def test_an_expired_slot_is_rejected_with_the_reason() -> None:
    expired = an_image().expire(now=NOON)
    assert expired.status is Status.REJECTED and "expired" in (expired.reason or "")
    assert Status.AWAITING_UPLOAD.shown_as == Status.PROCESSING.shown_as == "pending"


def test_open_uploads_are_capped_per_person_unless_the_cap_is_zero() -> None:
    check_open_uploads(19, 20)
    check_open_uploads(500, 0)
    with pytest.raises(TooManyOpenUploads):
        check_open_uploads(20, 20)
