"""The data-export saga's rules in the users service, without a database: which parts count, who did not
answer, when the link works, when a new request gets the pending export, and how many a day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gatherly.contracts.users import EXPORT_PARTS
from gatherly.users.domain import DataExport, ExportStatus, TooManyExports, UserId, export_to_give

NOON = datetime(2026, 6, 1, 12, tzinfo=UTC)


def pending(**changes: object) -> DataExport:
    values: dict[str, object] = {
        "id": "e-1",
        "user_id": UserId("u-1"),
        "status": ExportStatus.PENDING,
        "reason": None,
        "deadline_at": NOON + timedelta(hours=1),
        "requested_at": NOON,
    }
    return DataExport(**{**values, **changes})  # type: ignore[arg-type]


def test_each_service_counts_once_and_unknown_services_not_at_all() -> None:
    export = pending().with_part("groups").with_part("groups").with_part("mallory").with_part("events")
    assert export.parts == ("groups", "events")


def test_the_silent_services_are_the_missing_parts_and_the_archive_maker() -> None:
    assert pending().silent() == [*EXPORT_PARTS, "images"]
    some = pending().with_part("users").with_part("notifications")
    assert some.silent() == ["groups", "events", "images"]
    assert some.timeout_reason() == "No answer in time from: groups, events, images. Ask again, or contact support."
    every = pending(parts=EXPORT_PARTS)
    assert every.silent() == ["images"]
    assert pending(parts=EXPORT_PARTS, download_url="https://x/e.zip").silent() == []


def test_a_pending_export_is_live_until_its_deadline_only() -> None:
    export = pending()
    assert export.is_live(NOON)
    assert not export.is_live(export.deadline_at)
    assert not pending(status=ExportStatus.READY).is_live(NOON)
    assert not pending(status=ExportStatus.FAILED).is_live(NOON)


def test_the_link_is_shown_until_it_expires() -> None:
    ready = pending(status=ExportStatus.READY, download_url="https://x/e.zip", expires_at=NOON + timedelta(days=2))
    assert ready.link(NOON) == "https://x/e.zip"
    assert ready.link(NOON + timedelta(days=2)) is None
    assert pending().link(NOON) is None


def test_a_request_gets_the_export_being_made_else_a_new_one_up_to_the_day_s_limit() -> None:
    made = [pending(id=f"e-{n}", requested_at=NOON - timedelta(hours=n), status=ExportStatus.READY) for n in (1, 2)]
    assert export_to_give(made, NOON, per_day=3) is None
    live = pending(id="e-0")
    assert export_to_give([live, *made], NOON, per_day=3) is live  # one at a time, even at the limit
    with pytest.raises(TooManyExports) as refused:
        export_to_give([pending(id="e-0", status=ExportStatus.FAILED), *made], NOON, per_day=3)
    assert refused.value.retry_after == int(timedelta(hours=22).total_seconds())  # when e-2 leaves the 24 hours
    with pytest.raises(TooManyExports) as almost:
        export_to_give(made, NOON + timedelta(hours=22) - timedelta(microseconds=1), per_day=2)
    assert almost.value.retry_after == 1  # never "try again in 0 s"
