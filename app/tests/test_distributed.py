"""`gatherly up` with GATHERLY_LOG_BACKEND=kafka: the same one-process Gatherly, its events on the session's Kafka
broker, used end to end through its HTTP API as a person would (sign up, a group, an event, an RSVP)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from gatherly.app.devmail import newest_link_token
from gatherly.kernel.testing import LOG_BACKENDS, free_port

DEADLINE_S = 60.0
T = TypeVar("T")


def eventually(check: Callable[[], T | None], what: str) -> T:
    """Poll until `check` returns something (each step waits for events another service must have handled)."""
    deadline = time.monotonic() + DEADLINE_S
    while (response := check()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {DEADLINE_S:g}s")
        time.sleep(0.1)
    return response


def sign_up(client: httpx.Client, mail_dir: Path, name: str) -> dict[str, str]:
    email, password = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.org", "correct horse battery staple"
    body = {"email": email, "password": password, "display_name": name}
    assert client.post("/api/auth/signup", json=body).status_code == 202
    token = eventually(lambda: newest_link_token(mail_dir, email), f"{name}'s confirmation mail")
    assert client.post("/api/auth/confirm", json={"token": token}).status_code == 200
    login = client.post("/api/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def answered(response: httpx.Response, status: int) -> httpx.Response | None:
    return response if response.status_code == status else None


if "kafka" in LOG_BACKENDS:  # the broker is started only when the Kafka backend is under test

    @pytest.fixture
    def up_on_kafka(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[httpx.Client, Path]]:
        port = free_port()
        env = {
            **os.environ,
            "GATHERLY_DATA_DIR": str(tmp_path),
            "GATHERLY_LOG_BACKEND": "kafka",
            "GATHERLY_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "GATHERLY_LOG_JSON": "true",
            # Cheap password hashes: hashing cost is the users service's business, not this test's.
            "GATHERLY_PASSWORD_TIME_COST": "1",
            "GATHERLY_PASSWORD_MEMORY_KIB": "8",
            "GATHERLY_PASSWORD_PARALLELISM": "1",
            "GATHERLY_MAIL_POLL_INTERVAL": "0.2",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "gatherly.app", "up", "--no-demo", "--port", str(port)],
            env=env,
            stdout=(tmp_path / "gatherly.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:

                def ready() -> httpx.Response | None:
                    if process.poll() is not None:
                        log = (tmp_path / "gatherly.log").read_text()[-3000:]
                        raise AssertionError(f"gatherly up exited ({process.returncode}): {log}")
                    try:
                        return answered(client.get("/readyz"), 200)
                    except httpx.TransportError:
                        return None

                eventually(ready, "gatherly up ready on Kafka")
                yield client, tmp_path / "mail"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    def test_gatherly_up_on_kafka_carries_events_between_its_services(
        up_on_kafka: tuple[httpx.Client, Path],
    ) -> None:
        client, mail_dir = up_on_kafka
        olga, ann = sign_up(client, mail_dir, "Olga"), sign_up(client, mail_dir, "Ann")
        group = client.post("/api/groups", json={"name": "Kafka runners"}, headers=olga)
        assert group.status_code == 201, group.text
        group_id = group.json()["id"]
        assert client.post(f"/api/groups/{group_id}/join", json={"answers": []}, headers=ann).status_code == 200

        starts = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
        body: dict[str, Any] = {
            "group_id": group_id,
            "title": "Evening run",
            "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(hours=2)).isoformat(),
            "timezone": "Europe/Berlin",
            "venue": {"name": "Tiergarten", "address": "Strasse des 17. Juni"},
        }
        # The events service learns of the group and of Olga's leadership from the groups service's events (its read
        # model, fed through Kafka): until then it cannot let her schedule in that group.
        event = eventually(
            lambda: answered(client.post("/api/events", json=body, headers=olga), 201), "the event scheduled"
        ).json()
        # Ann's membership, also learned through Kafka, lets her RSVP.
        rsvp = eventually(
            lambda: answered(
                client.put(f"/api/events/{event['id']}/rsvp", json={"response": "yes", "guests": 0}, headers=ann),
                200,
            ),
            "Ann's RSVP accepted",
        )
        assert rsvp.json()["status"] == "going"

        def ann_told(kind: str) -> httpx.Response | None:
            inbox = client.get("/api/notifications", params={"limit": 100}, headers=ann)
            return inbox if kind in [item["kind"] for item in inbox.json()["items"]] else None

        # The notifications service heard of her RSVP (events → Kafka → notifications). (Not of the event itself
        # reliably: whether she is told depends on which of two topics, membership and event, it read first.)
        eventually(lambda: ann_told("rsvp_confirmed"), "Ann told her RSVP is confirmed")
