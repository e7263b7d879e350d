"""Benchmark: CPU time per RSVP in the events service's own code (the `respond` use case: store, unit of work,
outbox), beside the whole process's CPU per RSVP (the relay and the consumers of rsvp.* in the same process too).

CPU time, not rates: on a machine shared with other work, requests per second depend on the neighbours, CPU per
request much less. No HTTP (rsvp_contention.py measures through it): the group, its members and the events are put
into the events service's read models and made through its use cases, in a whole Gatherly in one process (embedded
mode, SQLite). Answers are sent one after another; with inline SQLite a use case runs without yielding, so the
thread's CPU time around each call is that call's own, except while it waits for the write lock (a consumer's
transaction then runs). The SQL statements each answer runs are counted exactly, and so are those the rest of the
process runs on the events and the notifications databases until every message is handled (the events service's
relay, the notifications service's consumer of rsvp.*, leases and polls).

    uv run python bench/rsvp_cpu.py [--people 200] [--profile FILE] [--whole-profile FILE] [--report FILE]

Appends a dated section to bench/reports/rsvp_cpu.md (and prints it); with --profile, FILE gets cProfile's view of
the use case alone; with --whole-profile, of the whole process while the answers are made and handled.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import platform
import pstats
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event as sqlalchemy_events

from gatherly.app.testing import FAST_SETTINGS, RunningGatherly, running_gatherly
from gatherly.contracts.groups import GroupCreated
from gatherly.events import service
from gatherly.events.domain import Answer, EventDetails, EventId, GroupId, RsvpStatus, UserId
from gatherly.events.store import unit_of_work

REPORT = Path(__file__).parent / "reports" / "rsvp_cpu.md"
SEATS = 20


def _details(capacity: int | None) -> EventDetails:
    starts = datetime.now(UTC) + timedelta(days=7)
    return EventDetails(
        title="Bench run",
        starts_at=starts,
        ends_at=starts + timedelta(hours=1),
        timezone="Europe/Berlin",
        online_url="https://meet.example.org/bench",
        capacity=capacity,
    )


async def group_in_read_models(gatherly: RunningGatherly, people: int) -> tuple[UserId, GroupId, list[UserId]]:
    """A public group with an organizer and `people` members, in the events service's read models (as its consumers
    of the groups service's events would put them; rsvp_contention.py uses it too)."""
    context = gatherly.process.host("events").context
    organizer, group_id = UserId(str(uuid.uuid4())), GroupId(str(uuid.uuid4()))
    members = [UserId(str(uuid.uuid4())) for _ in range(people)]
    created = GroupCreated(
        group_id=group_id,
        slug="bench",
        name="Bench",
        visibility="public",
        join_policy="open",
        organizer_id=organizer,
        created_at=datetime.now(UTC),
    )
    async with unit_of_work(context) as uow:
        await uow.groups.apply(created)
        await uow.members.put(group_id, organizer, "organizer")
        for member in members:
            await uow.members.put(group_id, member, "member")
    return organizer, group_id, members


ANSWERING: ContextVar[bool] = ContextVar("answering", default=False)
# Set in the benchmark's own task: its statements (the answers', counted apart, and settle()'s polls) are not the
# process's background work. The relay and the consumers run in tasks started before, which keep the default.
BENCHMARK: ContextVar[bool] = ContextVar("benchmark", default=False)


@dataclass
class Statements:
    answers: list[str]  # run by the answers themselves
    background: dict[str, int]  # run by the rest of the process, per service database


@contextmanager
def statements_of(gatherly: RunningGatherly) -> Iterator[Statements]:
    """The SQL statements the answers themselves run, and those the rest of the process runs meanwhile on the events
    and notifications databases (the context variables tell them apart)."""
    seen = Statements([], {"events": 0, "notifications": 0})
    listeners = []
    for name in seen.background:
        engine = gatherly.process.host(name).context.db.engine.sync_engine

        def record(conn: Any, cursor: Any, statement: str, *args: Any, service: str = name) -> None:
            if ANSWERING.get():
                seen.answers.append(statement)
            elif not BENCHMARK.get():
                seen.background[service] += 1

        sqlalchemy_events.listen(engine, "before_cursor_execute", record)
        listeners.append((engine, record))
    try:
        yield seen
    finally:
        for engine, record in listeners:
            sqlalchemy_events.remove(engine, "before_cursor_execute", record)


@dataclass
class Answers:
    own_ms: float  # CPU per answer while `respond` ran (other tasks may run while it waits for the write lock)
    whole_ms: float  # the process's CPU per answer until every message is handled
    statements: float  # SQL statements per answer
    relay: float  # statements per answer on the events database outside the answers (the relay, mostly)
    consumer: float  # statements per answer on the notifications database (its consumer of rsvp.*, mostly)
    made: list[service.MyRsvp]


async def _answer_all(
    gatherly: RunningGatherly,
    pairs: list[tuple[UserId, EventId]],
    profiler: cProfile.Profile | None,
    whole_profiler: cProfile.Profile | None,
) -> Answers:
    context = gatherly.process.host("events").context
    own = 0.0
    answers = []
    BENCHMARK.set(True)
    if whole_profiler:
        whole_profiler.enable()
    process_started = time.process_time()
    with statements_of(gatherly) as statements:
        for person, event_id in pairs:
            started = time.thread_time()
            if profiler:
                profiler.enable()
            answers.append(await _respond(context, event_id, person))
            if profiler:
                profiler.disable()
            own += time.thread_time() - started
        await gatherly.settle(timeout=600)
    whole = time.process_time() - process_started
    if whole_profiler:
        whole_profiler.disable()
    count = len(pairs)
    return Answers(
        own * 1000 / count,
        whole * 1000 / count,
        len(statements.answers) / count,
        statements.background["events"] / count,
        statements.background["notifications"] / count,
        answers,
    )


async def _respond(context: Any, event_id: EventId, person: UserId) -> service.MyRsvp:
    token = ANSWERING.set(True)
    try:
        return await service.respond(unit_of_work(context), event_id, person, Answer.YES, 0)
    finally:
        ANSWERING.reset(token)


async def run(people: int, profiler: cProfile.Profile | None, whole_profiler: cProfile.Profile | None) -> str:
    with tempfile.TemporaryDirectory() as folder:
        async with running_gatherly(Path(folder) / "data", **FAST_SETTINGS) as gatherly:
            context = gatherly.process.host("events").context
            organizer, group_id, members = await group_in_read_models(gatherly, people)
            contended = await service.schedule_event(unit_of_work(context), organizer, group_id, _details(SEATS))
            spread = [
                await service.schedule_event(unit_of_work(context), organizer, group_id, _details(None))
                for _ in members
            ]
            await gatherly.settle(timeout=600)
            contention = await _answer_all(gatherly, [(m, contended.id) for m in members], profiler, whole_profiler)
            going = [a for a in contention.made if a.status is RsvpStatus.GOING]
            positions = [a.waitlist_position for a in contention.made if a.status is RsvpStatus.WAITLISTED]
            assert len(going) == SEATS and positions == list(range(1, people - SEATS + 1))
            pairs = [(m, e.id) for m, e in zip(members, spread, strict=True)]
            spread_out = await _answer_all(gatherly, pairs, profiler, whole_profiler)
            assert all(a.status is RsvpStatus.GOING for a in spread_out.made)
    return "\n".join(
        [
            f"## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `bench/rsvp_cpu.py`",
            "",
            f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, {people} members "
            f"answering yes one after another, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average at the end "
            f"(the machine is shared): {_load()}.",
            "",
            "| answers | SQL statements per answer | statements per answer, rest of the process: events DB "
            "(relay) / notifications DB (consumer) | CPU per answer while `respond` ran | whole process, until "
            "every message is handled |",
            "|---|---|---|---|---|",
            f"| {people} to one event of {SEATS} seats ({SEATS} going, the rest waitlisted 1..{people - SEATS}) "
            f"| {contention.statements:.2f} | {contention.relay:.2f} / {contention.consumer:.2f} "
            f"| {contention.own_ms:.2f} ms | {contention.whole_ms:.2f} ms |",
            f"| {people}, one event each | {spread_out.statements:.2f} | {spread_out.relay:.2f} / "
            f"{spread_out.consumer:.2f} | {spread_out.own_ms:.2f} ms | {spread_out.whole_ms:.2f} ms |",
            "",
        ]
    )


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--profile", type=Path, help="write cProfile's view of the use case alone here")
    parser.add_argument("--whole-profile", type=Path, help="write cProfile's view of the whole process here")
    parser.add_argument("--report", type=Path, default=REPORT, help="the report a dated section is appended to")
    args = parser.parse_args()
    if args.profile and args.whole_profile:
        parser.error("one profile at a time: cProfile runs one profiler per thread")
    profiler = cProfile.Profile() if args.profile else None
    whole_profiler = cProfile.Profile() if args.whole_profile else None
    report = asyncio.run(run(args.people, profiler, whole_profiler))
    for chosen, path in ((profiler, args.profile), (whole_profiler, args.whole_profile)):
        if chosen is not None and path:
            _write_profile(chosen, path)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    with args.report.open("a") as appended:
        appended.write("\n" + report)
    print(report)


def _write_profile(profiler: cProfile.Profile, path: Path) -> None:
    summary = io.StringIO()
    stats = pstats.Stats(profiler, stream=summary)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(70)
    path.write_text(summary.getvalue())
    profiler.dump_stats(path.with_suffix(".prof"))  # for pstats / snakeviz


if __name__ == "__main__":
    main()
