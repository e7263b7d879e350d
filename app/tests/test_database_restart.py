"""Every connection the services hold to their PostgreSQL databases cut at once, as a database restart does (by
pg_terminate_backend on their own scratch databases: the server is shared with other test runs): the next requests
are answered (the pool's pre-ping replaces dead connections), and the relay and consumers resume."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
from sqlalchemy import select
from sqlalchemy.engine import make_url

from gatherly.app.testing import ApiHelpers, RunningGatherly, running_gatherly
from gatherly.events.tables import group_summaries
from gatherly.kernel.testing import DB_BACKENDS, POSTGRES_URL

TERMINATE = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = ANY($1::text[]) AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""


async def _cut_every_connection(running: RunningGatherly) -> int:
    databases = [str(make_url(host.context.db.url).database) for host in running.process.hosts]
    admin = await asyncpg.connect(make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False))
    try:
        return int(await admin.fetchval(TERMINATE, databases))
    finally:
        await admin.close()


async def _known_to_events(running: RunningGatherly, group_id: str) -> bool:
    async with running.process.host("events").context.db.read_connection() as connection:
        query = select(group_summaries.c.group_id).where(group_summaries.c.group_id == group_id)
        found = await connection.scalar(query)
    return found is not None


if "postgresql" in DB_BACKENDS:  # connections to a database server; SQLite has none to cut

    async def test_the_services_survive_their_database_connections_being_cut(tmp_path: Path) -> None:
        async with running_gatherly(tmp_path / "data", database_backend="postgresql") as running:
            api = ApiHelpers(running)
            ann = await api.person("Ann")
            before = await running.client.post("/api/groups", json={"name": "Before"}, headers=ann.auth)
            assert before.status_code == 201, before.text
            await running.settle()

            assert await _cut_every_connection(running) > 0

            # At worst a clean 503 saying to try again (a connection opened while the server was busy timed out),
            # and the next try succeeds.
            listed = await running.client.get("/api/groups", params={"near": "52.5,13.4"})
            if listed.status_code == 503:
                assert listed.headers["retry-after"] == "1", listed.text
                listed = await running.client.get("/api/groups", params={"near": "52.5,13.4"})
            assert listed.status_code == 200, listed.text
            after = await running.client.post("/api/groups", json={"name": "After"}, headers=ann.auth)
            assert after.status_code == 201, after.text
            # The relay and the events service's consumer lost their connections too: the new group still reaches
            # the events service.
            deadline = time.monotonic() + 60
            while not await _known_to_events(running, after.json()["id"]):
                assert time.monotonic() < deadline, "the group never reached the events service"
                await asyncio.sleep(0.1)
