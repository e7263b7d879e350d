"""Alembic environment of the images service."""

from gatherly.images.tables import metadata
from gatherly.kernel.alembic_scripts import run_env

run_env(metadata)
