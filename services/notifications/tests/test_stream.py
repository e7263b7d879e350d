"""The live stream over a real HTTP server (Server-Sent Events are streamed, which an in-process transport cannot
show): new notifications as they come, heartbeats, `Last-Event-ID` resume, single-use tickets; and the live feed
learning of notifications from the log, as a process that did not make them does."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn

from gatherly.contracts.notifications import NotificationCreated
from gatherly.kernel.log.base import TopicConfig
from gatherly.kernel.log.embedded import EmbeddedLog
from gatherly.kernel.messages import Envelope
from gatherly.notifications.stream import LIVE_FEED, TOPIC, LiveFeed

pytestmark = pytest.mark.asyncio(loop_scope="module")

# How long a frame may take to come: a notification crosses two services and the log first, and a loaded CI machine
# (load average 40) can take tens of seconds for that; a frame that comes returns at once.
WAIT_S = 60


async def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        await asyncio.sleep(0.01)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(api: Any) -> AsyncIterator[str]:
    """The test's Gatherly served by uvicorn on a free loopback port (its lifespan is already running)."""
    config = uvicorn.Config(api.running.process, host="127.0.0.1", port=0, lifespan="off", log_config=None)
    served = uvicorn.Server(config)
    task = asyncio.create_task(served.serve())
    await eventually(lambda: served.started, what="uvicorn listening")
    port = served.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    served.should_exit = True
    await task


async def _frames(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Each SSE frame as its fields (`comment` for a comment line)."""
    frame: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            frame["comment"] = line[1:].strip()
        else:
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")


async def _next_notification(frames: AsyncIterator[dict[str, str]]) -> dict[str, str]:
    async for frame in frames:
        if frame.get("event") == "notification":
            return frame
    raise AssertionError("the stream ended")


async def _announce(api: Any, organizer: Any, group_id: str, subject: str) -> None:
    sent = await api.client.post(
        f"/api/groups/{group_id}/announcements", json={"subject": subject, "body": "."}, headers=organizer.auth
    )
    assert sent.status_code == 202


async def test_new_notifications_arrive_live_with_heartbeats_between(api: Any, server: str) -> None:
    olga, ann = await api.person("Olga"), await api.person("Ann")
    group_id = await api.group(olga, ann)
    async with (
        httpx.AsyncClient(base_url=server, timeout=WAIT_S) as client,
        client.stream("GET", "/api/notifications/stream", headers=ann.auth) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = _frames(response)
        assert "retry" in await anext(frames)
        await _announce(api, olga, group_id, "Live one")
        frame = await asyncio.wait_for(_next_notification(frames), WAIT_S)
        assert json.loads(frame["data"])["title"] == "Runners: Live one"
        # Nothing more to say: a heartbeat comes (0.5 s in these tests) to keep the connection alive.
        assert (await asyncio.wait_for(anext(frames), WAIT_S)) == {"comment": "heartbeat"}


async def test_last_event_id_resumes_after_what_the_client_saw(api: Any, server: str) -> None:
    olga, ann = await api.person("Olga"), await api.person("Ann")
    group_id = await api.group(olga, ann)
    async with httpx.AsyncClient(base_url=server, timeout=WAIT_S) as client:
        async with client.stream("GET", "/api/notifications/stream", headers=ann.auth) as response:
            frames = _frames(response)
            await _announce(api, olga, group_id, "One")
            seen = await asyncio.wait_for(_next_notification(frames), WAIT_S)
        # Disconnected; two more come meanwhile.
        await _announce(api, olga, group_id, "Two")
        await _announce(api, olga, group_id, "Three")
        await api.running.settle()
        headers = {**ann.auth, "Last-Event-ID": seen["id"]}
        async with client.stream("GET", "/api/notifications/stream", headers=headers) as response:
            frames = _frames(response)
            missed = [await asyncio.wait_for(_next_notification(frames), WAIT_S) for _ in range(2)]
        assert [json.loads(f["data"])["title"] for f in missed] == ["Runners: Two", "Runners: Three"]
        assert int(missed[0]["id"]) > int(seen["id"])

        bad = await client.get("/api/notifications/stream", headers={**ann.auth, "Last-Event-ID": "abc"})
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "Last-Event-ID"


async def test_a_ticket_opens_one_stream_only(api: Any, server: str) -> None:
    ann = await api.person()
    ticket = (await api.client.post("/api/notifications/stream-ticket", headers=ann.auth)).json()["ticket"]
    async with httpx.AsyncClient(base_url=server, timeout=WAIT_S) as client:
        async with client.stream("GET", "/api/notifications/stream", params={"ticket": ticket}) as response:
            assert response.status_code == 200
            assert "retry" in await anext(_frames(response))
        again = await client.get("/api/notifications/stream", params={"ticket": ticket})
        assert again.status_code == 401
        assert (await client.get("/api/notifications/stream")).status_code == 401


async def test_one_stream_more_than_a_person_may_hold_is_refused_until_one_closes(api: Any, server: str) -> None:
    ann, bob = await api.person("Ann"), await api.person("Bob")
    feed = api.running.process.host("notifications").context.extras[LIVE_FEED]
    limit = api.running.process.platform.settings.notification_streams_per_person
    async with AsyncExitStack() as streams, httpx.AsyncClient(base_url=server, timeout=WAIT_S) as client:
        for _ in range(limit):
            response = await streams.enter_async_context(
                client.stream("GET", "/api/notifications/stream", headers=ann.auth)
            )
            assert response.status_code == 200
        refused = await client.get("/api/notifications/stream", headers=ann.auth)
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert f"At most {limit} live streams" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "3"
        # A ticket refused for want of a place is not spent: it opens her stream once one frees.
        ticket = (await api.client.post("/api/notifications/stream-ticket", headers=ann.auth)).json()["ticket"]
        by_ticket = await client.get("/api/notifications/stream", params={"ticket": ticket})
        assert by_ticket.status_code == 429
        assert by_ticket.headers["retry-after"] == "3"
        # The cap is per person: someone else still gets theirs.
        async with client.stream("GET", "/api/notifications/stream", headers=bob.auth) as other:
            assert other.status_code == 200
        assert feed.streams_of(ann.user_id) == limit, "a refused stream takes no place"
        # Her streams close (tabs shut): their places are given back, and a new stream may open.
        await streams.aclose()
        await eventually(lambda: feed.streams_of(ann.user_id) == 0, what="the closed streams given back")
        async with client.stream("GET", "/api/notifications/stream", headers=ann.auth) as again:
            assert again.status_code == 200
        async with client.stream("GET", "/api/notifications/stream", params={"ticket": ticket}) as by_ticket:
            assert by_ticket.status_code == 200
    await eventually(lambda: feed.streams_of(bob.user_id) == 0, what="bob's stream given back")


async def test_the_feed_wakes_a_watcher_for_a_notification_another_process_announced(tmp_path: Path) -> None:
    # Two handles on one log file are two processes' views of it: the feed follows records it did not write.
    ours, theirs = EmbeddedLog(tmp_path / "log.db"), EmbeddedLog(tmp_path / "log.db")
    await ours.start()
    await theirs.start()
    try:
        await theirs.ensure_topics([TopicConfig(TOPIC, partitions=4)])
        feed = LiveFeed(ours, poll_interval=0.02)
        following = asyncio.create_task(feed.run())
        with feed.watch("ann") as ann_woken, feed.watch("bob") as bob_woken:
            await asyncio.wait_for(feed.following.wait(), WAIT_S)
            created = NotificationCreated(
                notification_id="n1", user_id="ann", kind="event_scheduled", created_at=datetime.now(UTC)
            )
            await theirs.publish([Envelope.wrap(created, created.created_at).to_message()])
            await asyncio.wait_for(ann_woken.wait(), WAIT_S)
            assert not bob_woken.is_set()
        assert feed.watching == 0
        following.cancel()
    finally:
        await ours.close()
        await theirs.close()
