"""What goes into a data export's archive, without a database or storage: only files named under their own
service's folder, each service's JSON as it came, the pictures stored as they are, and an index of them."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime

from gatherly.images.archives import Picture, build_archive
from gatherly.images.domain import export_files, export_key

NOON = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_a_part_keeps_only_files_under_its_own_folder() -> None:
    files: dict[str, object] = {
        "groups/memberships.json": [1],
        "groups/bans.json": [],
        "users/profile.json": {"email": "someone@else"},  # another service's folder
        "../groups/x.json": [],
        "/etc/passwd.json": [],
        "groups/../../x.json": [],
        "groups/a\x00.json": [],
        "groups/nested/deep.json": [],
        "groups/script.sh": [],
        "GROUPS/loud.json": [],
    }
    assert export_files("groups", files) == {"groups/memberships.json": [1], "groups/bans.json": []}


def test_the_archive_holds_the_files_the_pictures_and_their_index() -> None:
    picture = Picture("0b0c5a7e-0000-4000-8000-000000000001", "avatar", NOON, 640, 480, b"RIFF\x00\x00\x00\x00WEBPdata")
    data = build_archive({"events/rsvps.json": [{"event_id": "e-1", "status": "going"}]}, [picture], NOON)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert sorted(archive.namelist()) == sorted(
        ["README.txt", "events/rsvps.json", "images/index.json", f"images/{picture.image_id}.webp"]
    )
    assert json.loads(archive.read("events/rsvps.json")) == [{"event_id": "e-1", "status": "going"}]
    assert archive.read(f"images/{picture.image_id}.webp") == picture.data
    assert archive.getinfo(f"images/{picture.image_id}.webp").compress_type == zipfile.ZIP_STORED
    (entry,) = json.loads(archive.read("images/index.json"))
    assert entry == {
        "file": f"images/{picture.image_id}.webp",
        "image_id": picture.image_id,
        "purpose": "avatar",
        "created_at": "2026-06-01T12:00:00Z",
        "width": 640,
        "height": 480,
    }
    assert "2026-06-01 12:00" in archive.read("README.txt").decode()
    assert archive.testzip() is None


def test_an_archive_with_no_pictures_still_has_its_index() -> None:
    archive = zipfile.ZipFile(io.BytesIO(build_archive({}, [], NOON)))
    assert json.loads(archive.read("images/index.json")) == []


def test_archives_live_under_their_own_prefix() -> None:
    assert export_key("0b0c5a7e-0000-4000-8000-000000000001") == "exports/0b0c5a7e-0000-4000-8000-000000000001.zip"
