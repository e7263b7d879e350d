"""A service's part of a data export: its files as JSON, within the part's bound, or a failure that says so."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from gatherly.contracts.users import (
    EXPORT_PART_MAX_BYTES,
    UserExportPartFailed,
    UserExportPartReady,
    UserExportRequested,
)
from gatherly.kernel.exports import export_part, rows

NOON = datetime(2026, 6, 1, 12, tzinfo=UTC)
REQUEST = UserExportRequested(user_id="u-1", export_id="e-1", requested_at=NOON)


def test_rows_become_json_documents_with_iso_datetimes() -> None:
    found = rows([{"group_id": "g-1", "joined_at": NOON, "answers": [{"question": "Why?", "answer": "Fun"}]}])
    assert found == [
        {"group_id": "g-1", "joined_at": "2026-06-01T12:00:00Z", "answers": [{"question": "Why?", "answer": "Fun"}]}
    ]
    json.dumps(found)


def test_a_part_within_its_bound_carries_every_file() -> None:
    part = export_part(REQUEST, "groups", {"groups/memberships.json": rows([{"joined_at": NOON}])}, NOON)
    assert isinstance(part, UserExportPartReady)
    assert (part.user_id, part.export_id, part.service, part.made_at) == ("u-1", "e-1", "groups", NOON)
    assert part.files == {"groups/memberships.json": [{"joined_at": "2026-06-01T12:00:00Z"}]}


def test_a_part_over_its_bound_fails_loudly_instead_of_being_cut_short() -> None:
    files = {"events/comments.json": [{"body": "x" * 100}] * 10}
    exact = len(json.dumps(files).encode())
    assert isinstance(export_part(REQUEST, "events", files, NOON, max_bytes=exact), UserExportPartReady)
    failed = export_part(REQUEST, "events", files, NOON, max_bytes=exact - 1)
    assert isinstance(failed, UserExportPartFailed)
    assert (failed.service, failed.export_id, failed.failed_at) == ("events", "e-1", NOON)
    assert str(exact) in failed.reason and str(exact - 1) in failed.reason


def test_the_bound_counts_bytes_not_characters_and_defaults_to_the_contract() -> None:
    files = {"users/profile.json": {"bio": "é" * (EXPORT_PART_MAX_BYTES // 2)}}  # 2 bytes each in UTF-8
    assert isinstance(export_part(REQUEST, "users", files, NOON), UserExportPartFailed)
    assert isinstance(export_part(REQUEST, "users", {"users/profile.json": {"bio": "é"}}, NOON), UserExportPartReady)
