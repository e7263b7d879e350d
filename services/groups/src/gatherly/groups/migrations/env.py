"""Alembic environment of the groups service."""

from gatherly.groups.tables import metadata
from gatherly.kernel.alembic_scripts import run_env

run_env(metadata)
