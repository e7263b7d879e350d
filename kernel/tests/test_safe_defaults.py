"""Safe defaults: dev endpoints only on loopback unless asked for, private files for keys and mail."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gatherly.kernel.files import private_directory
from gatherly.kernel.mail import FileMailer, compose
from gatherly.kernel.settings import Settings


@pytest.mark.parametrize(
    ("host", "dev", "on"),
    [
        ("127.0.0.1", None, True),
        ("localhost", None, True),
        ("::1", None, True),
        ("0.0.0.0", None, False),
        ("192.168.1.20", None, False),
        ("0.0.0.0", True, True),
        ("127.0.0.1", False, False),
    ],
)
def test_dev_endpoints_are_on_by_default_only_on_loopback(host: str, dev: bool | None, on: bool) -> None:
    assert Settings(host=host, dev=dev).dev_endpoints is on


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_mail_files_and_their_folder_are_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        folder = tmp_path / "mail"
        await FileMailer(folder).send(compose(sender="a@x.org", to="b@x.org", subject="Reset", text="link"))
    finally:
        os.umask(previous)
    (message,) = folder.glob("*.eml")
    assert mode_of(folder) == 0o700 and mode_of(message) == 0o600


def test_an_existing_data_directory_is_narrowed_to_its_owner(tmp_path: Path) -> None:
    wide = tmp_path / "var"
    wide.mkdir(mode=0o755)
    wide.chmod(0o755)
    private_directory(wide)
    assert mode_of(wide) == 0o700
