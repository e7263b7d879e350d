"""Alembic environment of the users service."""

from gatherly.kernel.alembic_scripts import run_env
from gatherly.users.store import metadata

run_env(metadata)
