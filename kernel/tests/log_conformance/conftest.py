"""Fixtures for the message-log conformance suite (the `message_log` fixture itself is in kernel/tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Makes topic and group names that cannot collide with other tests or runs on a shared Kafka."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:12]}"
