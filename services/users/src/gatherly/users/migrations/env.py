"""Alembic environment of the users service."""

from gatherly.kernel.alembic_scripts import run_env
from gatherly.users.tables import metadata

run_env(metadata)
