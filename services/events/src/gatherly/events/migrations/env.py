"""Alembic environment of the events service."""

from gatherly.events.store import metadata
from gatherly.kernel.migrations import run_env

run_env(metadata)
