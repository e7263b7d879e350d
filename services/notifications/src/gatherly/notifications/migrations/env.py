"""Alembic environment of the notifications service."""

from gatherly.kernel.migrations import run_env
from gatherly.notifications.store import metadata

run_env(metadata)
