"""Events of the users service (topic `user`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from gatherly.contracts.base import IntegrationEvent


class GeoPoint(BaseModel):
    # Frozen, as the events that carry it: an event is handed to several consumer groups at once.
    model_config = ConfigDict(frozen=True)

    lat: float
    lng: float


class ImageVariants(BaseModel):
    """Public URLs of an image's variants, as the images service reports them."""

    model_config = ConfigDict(frozen=True)

    thumb: str
    medium: str
    large: str


class UserEvent(IntegrationEvent):
    TOPIC: ClassVar[str] = "user"
    AGGREGATE_ID: ClassVar[str] = "user_id"

    user_id: str


class UserRegistered(UserEvent):
    """An account was created (not yet confirmed)."""

    TYPE: ClassVar[str] = "user.registered"

    email: str
    display_name: str
    registered_at: datetime


class UserConfirmed(UserEvent):
    """The person proved they own the email address; the account can log in."""

    TYPE: ClassVar[str] = "user.confirmed"

    email: str
    display_name: str
    confirmed_at: datetime


class UserProfileUpdated(UserEvent):
    """What other services show of a person. Carries the whole public profile (plus email for notifications),
    so a consumer can upsert its read model from this one message."""

    TYPE: ClassVar[str] = "user.profile_updated"

    email: str
    display_name: str
    bio: str = ""
    city: str | None = None
    location: GeoPoint | None = None
    # A tuple, so that the event is immutable all the way down and parsed once for all the groups that apply it
    # (kernel/delivery.py `ParsedRecords`); the same JSON array.
    topics: tuple[str, ...] = ()
    avatar: ImageVariants | None = None
    updated_at: datetime


class UserDeleted(UserEvent):
    """The person asked to delete their account: the first step of the account-deletion saga. Each of groups,
    events, notifications and images erases or anonymises what it holds of the person and answers with
    `user_deletion.step_done` in the same transaction; users erases the account itself. `deletion_id` names the
    saga (absent in messages written before the saga had replies: erase, but there is nobody to answer)."""

    TYPE: ClassVar[str] = "user.deleted"

    deleted_at: datetime
    deletion_id: str | None = None


class UserLocked(UserEvent):
    """An administrator locked the account (`gatherly users lock`): it cannot log in or refresh, its sessions
    ended, and every service refuses its access tokens until it is unlocked. `reason` is the administrator's note."""

    TYPE: ClassVar[str] = "user.locked"

    locked_at: datetime
    reason: str


class UserUnlocked(UserEvent):
    """An administrator lifted the lock: the person can log in again. Access tokens issued before the unlock
    stay refused (they were issued before the lock)."""

    TYPE: ClassVar[str] = "user.unlocked"

    unlocked_at: datetime


class UserExportRequested(UserEvent):
    """The person asked for a copy of their data: the first step of the data-export saga. Each service in
    `EXPORT_PARTS` answers with `user_export.part_ready` (or `user_export.part_failed`); the images service
    collects the parts, adds the person's images and announces the archive with `user_export.archive_ready`."""

    TYPE: ClassVar[str] = "user.export_requested"

    export_id: str
    requested_at: datetime


# --- topic `user_deletion` (key: user id): the other services' replies in the account-deletion saga -------------


class UserDeletionReply(IntegrationEvent):
    """Published by a service taking part in the account-deletion saga (not by the users service, which runs the
    saga and waits for these replies; its schema lives here because the saga is the users service's)."""

    TOPIC: ClassVar[str] = "user_deletion"
    AGGREGATE_ID: ClassVar[str] = "user_id"

    user_id: str


class UserDeletionStepDone(UserDeletionReply):
    """`service` (groups, events, notifications or images) has erased or anonymised everything it held of the
    person, in the transaction that published this. `what` counts it by kind (e.g. {"memberships": 3}), for the
    operators' view of the saga. Publishing it again is harmless: the saga counts each service once."""

    TYPE: ClassVar[str] = "user_deletion.step_done"

    deletion_id: str
    service: str
    what: dict[str, int] = {}
    done_at: datetime


# --- topic `user_export` (key: user id): the parts and the archive of the data-export saga ----------------------

# The services whose parts make an export, and the name each gives in `service` (images adds the images itself).
EXPORT_PARTS: tuple[str, ...] = ("users", "groups", "events", "notifications")
# A part's `files`, as JSON, may take at most this many bytes: the log's default message limit (Kafka: 1 MB) less
# room for the envelope. A larger part is not cut short: the service publishes `user_export.part_failed`.
EXPORT_PART_MAX_BYTES = 900_000


class UserExportEvent(IntegrationEvent):
    """Published by the services taking part in the data-export saga (its schemas live here because the saga is
    the users service's)."""

    TOPIC: ClassVar[str] = "user_export"
    AGGREGATE_ID: ClassVar[str] = "user_id"
    # The parts carry everything a service holds of the person, and the archive's event a link to all of it: they
    # are of no use after the export's deadline (an hour) and must not outlast a deletion by the log's 7 days (nor,
    # parked on the dead-letter topic, for ever). A day leaves room for an outage of the collecting service.
    TOPIC_RETENTION: ClassVar[timedelta | None] = timedelta(days=1)

    user_id: str
    export_id: str


class UserExportPartReady(UserExportEvent):
    """`service`'s part of the export: `files` maps a file name in the archive (e.g. "groups/memberships.json") to
    its JSON document, everything the service holds of the person and nothing of anyone else. Publishing it again
    is harmless: the saga counts each service once."""

    TYPE: ClassVar[str] = "user_export.part_ready"

    service: str
    files: dict[str, Any]
    made_at: datetime


class UserExportPartFailed(UserExportEvent):
    """`service` cannot give its part (it is larger than EXPORT_PART_MAX_BYTES): the export fails, saying why."""

    TYPE: ClassVar[str] = "user_export.part_failed"

    service: str
    reason: str
    failed_at: datetime


class UserExportArchiveReady(UserExportEvent):
    """The images service wrote the archive (every part's files and the person's images, in one zip); anyone with
    `download_url` can download it until `expires_at`, when it is deleted."""

    TYPE: ClassVar[str] = "user_export.archive_ready"

    download_url: str
    expires_at: datetime
    size_bytes: int
