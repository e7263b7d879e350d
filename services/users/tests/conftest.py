"""Fixtures of the users service's tests: a Gatherly running only the users service, with cheap password hashes."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gatherly.app.devmail import text_of
from gatherly.app.testing import RunningGatherly, running_gatherly, wait_for_mail
from gatherly.kernel.clock import FrozenClock
from gatherly.kernel.messages import Envelope
from gatherly.kernel.testing import DB_BACKENDS

# argon2id at its cheapest: tests exercise the flow, not the cost (production defaults stay strong).
CHEAP_HASHES: dict[str, Any] = {"password_time_cost": 1, "password_memory_kib": 8, "password_parallelism": 1}
FAST_MAIL: dict[str, Any] = {"mail_retry_initial_delay": 0.05, "mail_retry_max_delay": 0.2, "mail_poll_interval": 0.2}
NO_LIMITS: dict[str, Any] = {
    "signup_limit_per_minute": 0,
    "login_limit_per_minute": 0,
    "password_reset_limit_per_minute": 0,
}


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DB_BACKENDS)
async def shared_users(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningGatherly]:
    """One running users service per test module (starting and stopping one costs ~0.7 s). Rate limits are
    off here (tests of limits start their own); tests use addresses of their own, so they do not meet."""
    data_dir = tmp_path_factory.mktemp("users") / "data"
    async with running_gatherly(
        data_dir, services=["users"], database_backend=request.param, **CHEAP_HASHES, **FAST_MAIL, **NO_LIMITS
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def users(shared_users: RunningGatherly) -> AsyncIterator[RunningGatherly]:
    """The module's running users service; what a test swaps in (clock, mailer, hasher) is put back after it."""
    platform = shared_users.process.platform
    identity = shared_users.process.host("users").context.extras["identity"]
    saved = (platform.clock, platform.mailer, platform.verifier.min_refetch_seconds, identity.passwords)
    yield shared_users
    platform.clock, platform.mailer, platform.verifier.min_refetch_seconds, identity.passwords = saved


@pytest_asyncio.fixture(loop_scope="module", params=DB_BACKENDS)
async def own_users(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningGatherly]:
    """A users service of the test's own, with the default rate limits (for tests that change what all share)."""
    async with running_gatherly(
        tmp_path / "data", services=["users"], database_backend=request.param, **CHEAP_HASHES, **FAST_MAIL
    ) as running:
        yield running


@pytest.fixture
def clock(users: RunningGatherly) -> FrozenClock:
    """Freeze the platform clock of the running service (lockouts, link and token expiry); `users` puts the real
    clock back after the test."""
    frozen = FrozenClock(datetime.now(UTC))
    users.process.platform.clock = frozen
    return frozen


@pytest.fixture
def link_in_mail(users: RunningGatherly) -> Callable[..., Awaitable[str]]:
    """The token of the newest `<public_url>/<path>?token=` link emailed to `address` (waits for mail #count)."""

    async def find(address: str, path: str = "confirm", count: int = 1) -> str:
        messages = await wait_for_mail(users, address, count)
        text = text_of(messages[-1])
        match = re.search(rf"{re.escape(users.settings.effective_public_url)}/{path}\?token=([A-Za-z0-9_\-%]+)", text)
        assert match, f"no {path} link in: {text}"
        return urllib.parse.unquote(match.group(1))

    return find


@pytest.fixture
def published(users: RunningGatherly) -> Callable[..., Awaitable[list[Any]]]:
    """The events of a type the users service published so far (after everything has settled), oldest first;
    keyword arguments keep those whose fields have these values (e.g. user_id=...)."""

    async def of_type(event_type: str, **where: Any) -> list[Any]:
        await users.settle()
        records = await users.process.platform.log.read("user", limit=100_000)
        envelopes = sorted((Envelope.from_record(r) for r in records), key=lambda e: e.occurred_at)
        events = [e.event() for e in envelopes if e.type == event_type]
        return [e for e in events if all(getattr(e, name) == value for name, value in where.items())]

    return of_type
