"""Alembic environment of the users service."""

from gatherly.kernel.migrations import run_env
from gatherly.users.tables import metadata

run_env(metadata)
