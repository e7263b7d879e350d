"""Alembic environment of the notifications service."""

from gatherly.kernel.alembic_scripts import run_env
from gatherly.notifications.store import metadata

run_env(metadata)
