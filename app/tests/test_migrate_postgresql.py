"""`gatherly migrate` as an operator runs it in distributed mode: one PostgreSQL database per service (the
GATHERLY_DATABASE_URL template), PostGIS created where a service needs it, every migration applied, safe to run
again; then the services start on those databases and answer a nearby search."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest

from gatherly.app.services import ALL
from gatherly.kernel.testing import DB_BACKENDS, free_port, scratch_databases

pytestmark = pytest.mark.slow

NEEDS_POSTGIS = {"groups", "events"}


def _migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatherly.app", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )


async def _facts(url: str) -> tuple[bool, str]:
    """Whether PostGIS is in the database, and its Alembic revision."""
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        postgis = await connection.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'postgis'")
        revision = await connection.fetchval("SELECT version_num FROM alembic_version")
        return bool(postgis), str(revision)
    finally:
        await connection.close()


async def _ready(base: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        for _ in range(int(timeout / 0.2)):
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise AssertionError(f"gatherly exited early ({process.returncode}):\n{output[-4000:]}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("gatherly did not become ready")


if "postgresql" in DB_BACKENDS:  # the command against PostgreSQL: SQLite's is test_cli.py's

    async def test_migrate_builds_one_postgresql_database_per_service_then_the_services_run_on_them(
        tmp_path: Path,
    ) -> None:
        async with scratch_databases("postgresql", tmp_path, list(ALL)) as template:
            env = {**os.environ, "GATHERLY_DATA_DIR": str(tmp_path / "data"), "GATHERLY_DATABASE_URL": template}
            first = await asyncio.to_thread(_migrate, env)
            assert first.returncode == 0, first.stdout + first.stderr
            heads = {}
            for service in ALL:
                assert f"migrated {service}" in first.stdout
                postgis, heads[service] = await _facts(template.replace("{service}", service))
                assert postgis is (service in NEEDS_POSTGIS), service
            again = await asyncio.to_thread(_migrate, env)  # nothing left to do: no error, the same revisions
            assert again.returncode == 0, again.stdout + again.stderr
            for service in ALL:
                expected = (service in NEEDS_POSTGIS, heads[service])
                assert await _facts(template.replace("{service}", service)) == expected

            port = free_port()
            process = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-m", "gatherly.app", "up", "--no-demo", "--port", str(port)],
                env={**env, "GATHERLY_MIGRATE_ON_START": "false"},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            try:
                base = f"http://127.0.0.1:{port}"
                await _ready(base, process)
                async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                    groups = await client.get("/api/groups", params={"near": "52.52,13.405", "radius_km": 30})
                    assert groups.status_code == 200, groups.text
                    events = await client.get("/api/events", params={"near": "52.52,13.405", "sort": "distance"})
                    assert events.status_code == 200, events.text
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(process.wait, 60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    await asyncio.to_thread(process.wait)
