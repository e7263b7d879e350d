"""Alembic environment of the events service."""

from gatherly.events.store import metadata
from gatherly.kernel.alembic_scripts import run_env

run_env(metadata)
