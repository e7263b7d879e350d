"""Alembic environment of the groups service."""

from gatherly.groups.tables import metadata
from gatherly.kernel.migrations import run_env

run_env(metadata)
