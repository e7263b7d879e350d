"""Events of the notifications service (topic `notification`, keyed by recipient): how the live streams of every
notifications process learn that someone has something new, without sharing any process's memory."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from gatherly.contracts.base import IntegrationEvent


class NotificationCreated(IntegrationEvent):
    """A notification was put in someone's in-app inbox (its content stays in the notifications service's
    database: live streams read it from there, in the inbox's order)."""

    TOPIC: ClassVar[str] = "notification"
    AGGREGATE_ID: ClassVar[str] = "user_id"
    TYPE: ClassVar[str] = "notification.created"

    notification_id: str
    user_id: str
    kind: str
    created_at: datetime
