"""The live feed: how a Server-Sent Events stream learns that its person has something new.

Notifications are made by whichever notifications process's consumer handled the cause, so a stream cannot wait on
its own process's memory. Each process follows the `notification` topic of the message log from its end (no
consumer group: every process must see every record) and wakes the streams of the people a record names; the
stream then reads what it has not sent from the database, in inbox order. A missed wake costs at most a heartbeat
interval, since every stream also looks on each heartbeat."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from gatherly.contracts.notifications import NotificationCreated
from gatherly.kernel.log.base import MessageLog
from gatherly.notifications.domain import check_stream_allowed

log = structlog.get_logger(__name__)

TOPIC = NotificationCreated.TOPIC
# Where the process's feed is kept (ServiceContext.extras).
LIVE_FEED = "live_feed"


class LiveFeed:
    """One per process. `run` follows the topic (a supervised background task); streams `watch` a person."""

    def __init__(self, message_log: MessageLog, *, poll_interval: float = 0.1, batch: int = 1000) -> None:
        self.log = message_log
        self.poll_interval = poll_interval
        self.batch = batch
        self._watchers: dict[str, set[asyncio.Event]] = {}
        # Set once the feed knows where the topic ended when it started: records after that wake watchers.
        self.following = asyncio.Event()

    @contextmanager
    def watch(self, user_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever a notification for `user_id` is announced (clear it before looking again)."""
        woken = self.open(user_id)
        try:
            yield woken
        finally:
            self.close(user_id, woken)

    def open(self, user_id: str, limit: int | None = None) -> asyncio.Event:
        """Like `watch`, for a stream that ends elsewhere (`close` it then); refused with TooManyStreams when the
        person already has `limit` open here."""
        if limit is not None:
            check_stream_allowed(self.streams_of(user_id), limit)
        woken = asyncio.Event()
        self._watchers.setdefault(user_id, set()).add(woken)
        return woken

    def close(self, user_id: str, woken: asyncio.Event) -> None:
        watchers = self._watchers.get(user_id)
        if watchers is not None:
            watchers.discard(woken)
            if not watchers:
                del self._watchers[user_id]

    def streams_of(self, user_id: str) -> int:
        return len(self._watchers.get(user_id, ()))

    @property
    def watching(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    async def run(self) -> None:
        """Follow the topic from its end now: older notifications are the streams' own business (they read the
        database from the client's Last-Event-ID)."""
        positions = {tp.partition: end for tp, end in (await self.log.end_offsets(TOPIC)).items()}
        self.following.set()
        while True:
            records = await self.log.read(TOPIC, positions, limit=self.batch)
            for record in records:
                positions[record.partition] = record.offset + 1
                for woken in self._watchers.get(record.key, ()):
                    woken.set()
            if len(records) < self.batch:
                await asyncio.sleep(self.poll_interval)
