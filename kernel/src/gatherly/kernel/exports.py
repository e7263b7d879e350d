"""A service's part of a person's data export (the users service's data-export saga): its files as JSON documents,
checked against the part's size bound, and the event that answers the request (`part_ready`, or `part_failed`
when the part is too large: an export is never cut short without saying so)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python

from gatherly.contracts.users import (
    EXPORT_PART_MAX_BYTES,
    UserExportPartFailed,
    UserExportPartReady,
    UserExportRequested,
)


def rows(found: Iterable[Mapping[Any, Any]]) -> list[dict[str, Any]]:
    """Database rows as JSON documents (datetimes in ISO 8601)."""
    documents: list[dict[str, Any]] = to_jsonable_python([dict(row) for row in found])
    return documents


def export_part(
    request: UserExportRequested,
    service: str,
    files: Mapping[str, Any],
    now: datetime,
    *,
    max_bytes: int | None = None,
) -> UserExportPartReady | UserExportPartFailed:
    """`service`'s answer to `request`: its files, or a failure naming the size when they exceed `max_bytes`
    (EXPORT_PART_MAX_BYTES unless given)."""
    max_bytes = max_bytes or EXPORT_PART_MAX_BYTES
    documents = to_jsonable_python(dict(files))
    size = len(json.dumps(documents, ensure_ascii=False).encode())
    if size > max_bytes:
        return UserExportPartFailed(
            user_id=request.user_id,
            export_id=request.export_id,
            service=service,
            reason=f"The {service} part is {size} bytes, more than the {max_bytes} a part may take.",
            failed_at=now,
        )
    return UserExportPartReady(
        user_id=request.user_id, export_id=request.export_id, service=service, files=documents, made_at=now
    )
