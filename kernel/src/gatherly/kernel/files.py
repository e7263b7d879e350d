"""Files that hold secrets or people's mail (databases with signing keys, .eml files): private to the account that
runs Gatherly — directories 0700, files 0600 — whatever the umask of the shell that started it."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600
# For a whole process: every file it creates (SQLite databases and their journals included) is private.
PRIVATE_UMASK = 0o077


def private_directory(path: Path) -> Path:
    """Create `path` (and missing parents) as 0700; an existing one is narrowed to 0700."""
    path.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
    path.chmod(PRIVATE_DIRECTORY)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to a new file readable by its owner only (created 0600, never briefly wider)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    path.chmod(PRIVATE_FILE)  # O_CREAT's mode is narrowed by the umask only, never widened: make it exact
