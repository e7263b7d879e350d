"""`UtcDateTime`'s one-step bind processor on SQLite gives what SQLAlchemy's own chain gives, errors included."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import TypeDecorator
from sqlalchemy.dialects import postgresql, sqlite

from gatherly.kernel.tables import UtcDateTime

SQLITE = sqlite.dialect()
OFFSETS = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
)


def both(value: Any) -> tuple[Any, Any]:
    """(this type's processor's answer, SQLAlchemy's chain's answer), each a value or the error's type and text."""
    kind = UtcDateTime()
    answers = []
    # SQLAlchemy's chain as it runs it: on the type's SQLite form (its `impl` SQLite's DATETIME).
    chain = TypeDecorator.bind_processor(kind.dialect_impl(SQLITE), SQLITE)
    for process in (kind._cached_bind_processor(SQLITE), chain):
        assert process is not None
        try:
            answers.append(process(value))
        except Exception as error:
            answers.append((type(error), str(error)))
    return answers[0], answers[1]


@given(st.datetimes(timezones=st.one_of(OFFSETS, st.just(UTC))))
def test_an_aware_time_is_written_as_sqlalchemy_writes_it_on_sqlite(value: datetime) -> None:
    fast, general = both(value)
    assert fast == general


@pytest.mark.parametrize(
    "value",
    [
        None,
        datetime(2026, 1, 2, 3, 4, 5),
        date(2026, 1, 2),
        "2026-01-02 03:04:05",
        datetime.min.replace(tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_what_is_not_an_aware_time_gets_sqlalchemys_answer_or_error(value: Any) -> None:
    fast, general = both(value)
    assert fast == general


def test_other_databases_keep_sqlalchemys_chain() -> None:
    process = UtcDateTime().bind_processor(postgresql.dialect())
    assert process is not None and "UtcDateTime" not in process.__qualname__
    assert process(datetime(2026, 1, 2, 3, tzinfo=timezone(timedelta(hours=2)))) == datetime(2026, 1, 2, 1, tzinfo=UTC)
