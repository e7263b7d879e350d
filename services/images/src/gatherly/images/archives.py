"""A person's data export as one zip: each service's JSON files, the person's pictures, and an index of them.
CPU and memory only, no I/O; run in a worker thread."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python

README = """This is a copy of the data Gatherly holds of you, made at your request on {made_at} (UTC).

- users/profile.json: your account and profile
- groups/: your memberships, join requests, bans and the groups you organize
- events/: your RSVPs, comments and check-ins
- notifications/: your notifications, preferences and push subscriptions
- images/: every picture you uploaded (the largest copy Gatherly keeps), listed in images/index.json
"""


@dataclass(frozen=True)
class Picture:
    image_id: str
    purpose: str
    created_at: datetime
    width: int | None
    height: int | None
    data: bytes


def build_archive(files: Mapping[str, Any], pictures: Sequence[Picture], made_at: datetime) -> bytes:
    """The zip: `files` as pretty-printed JSON under their names, the pictures under images/<id>.webp."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt", README.format(made_at=made_at.strftime("%Y-%m-%d %H:%M")))
        for name in sorted(files):
            archive.writestr(name, json.dumps(files[name], indent=2, ensure_ascii=False))
        index = [
            {
                "file": f"images/{picture.image_id}.webp",
                "image_id": picture.image_id,
                "purpose": picture.purpose,
                "created_at": picture.created_at,
                "width": picture.width,
                "height": picture.height,
            }
            for picture in pictures
        ]
        archive.writestr("images/index.json", json.dumps(to_jsonable_python(index), indent=2))
        for picture in pictures:
            # WebP is compressed already: stored, not deflated again.
            archive.writestr(f"images/{picture.image_id}.webp", picture.data, compress_type=zipfile.ZIP_STORED)
    return out.getvalue()
