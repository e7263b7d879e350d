"""Alembic environment of the images service."""

from gatherly.images.store import metadata
from gatherly.kernel.migrations import run_env

run_env(metadata)
