"""Benchmark: RSVPs through the HTTP API of a whole Gatherly in one process (embedded mode, SQLite), beside a
baseline measured in the same run.

1. Contention: N clients answer yes at once to one event of S seats → exactly S going, the rest waitlisted with
   positions 1..N-S; RSVPs per second.
2. No contention: N clients answer yes at once, each to an event of their own; RSVPs per second.
3. Baseline: N concurrent requests to a bare JSON endpoint of the same server (`GET /livez`), requests per second.

Requests go through the gateway's ASGI app in-process (httpx ASGITransport): the whole HTTP stack of the app,
no sockets. The members are put into the events service's read models and given access tokens signed with the
users service's key (no sign-ups: 200 of them, each a mail and a password hash, did not finish in 600 s on the
loaded machine); the events are scheduled and answered through HTTP. Appends a dated section to
bench/reports/rsvp_contention.md (and prints it).

    uv run python bench/rsvp_contention.py [--clients 200] [--seats 20] [--rounds 3] [--profile FILE]

With --profile, the RSVP phases run under cProfile (the relay and consumers in the same process included) and FILE
gets the functions that took the most CPU of their own, to see where an RSVP's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import platform
import pstats
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from rsvp_cpu import group_in_read_models

from gatherly.app.testing import FAST_SETTINGS, RunningGatherly, running_gatherly
from gatherly.kernel.loop_health import freeze_startup_heap, set_young_collection_threshold
from gatherly.users.crypto import signing_key_for
from gatherly.users.service import Identity
from gatherly.users.store import unit_of_work as users_unit_of_work

FAST = {
    **FAST_SETTINGS,
    # Signing up hundreds of people can outlast a 15-minute access token on a busy machine; the rounds measure
    # RSVPs, not token expiry.
    "access_token_ttl_seconds": 6 * 3600,
}
# Every phase has a deadline: on a machine too loaded to finish, the benchmark says which phase did not, rather than
# running on.
PHASE_TIMEOUT_S = 600.0
PHASE_LIMIT = [PHASE_TIMEOUT_S]  # as given with --phase-timeout
PROFILER: list[cProfile.Profile] = []  # with --profile
REPORT = Path(__file__).parent / "reports" / "rsvp_contention.md"
T = TypeVar("T")


def _event(group_id: str, capacity: int | None) -> dict[str, Any]:
    starts = datetime.now(UTC) + timedelta(days=7)
    return {
        "group_id": group_id,
        "title": "Bench run",
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=1)).isoformat(),
        "timezone": "Europe/Berlin",
        "online_url": "https://meet.example.org/bench",
        "capacity": capacity,
    }


async def _phase(name: str, work: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(PHASE_LIMIT[0]) as limit:
            return await work
    except TimeoutError:
        if not limit.expired():
            raise  # a wait inside the phase gave up (a mail, settling), not the phase's deadline
        raise SystemExit(
            f"{name} did not finish within {PHASE_LIMIT[0]:.0f} s (is the machine overloaded? see --phase-timeout)"
        ) from None


@dataclass(frozen=True)
class Member:
    """A bench member: who they are to the events service, and the access token the users service signed for them."""

    user_id: str
    auth: dict[str, str]


async def _token_for(gatherly: RunningGatherly, user_id: str) -> dict[str, str]:
    """An access token for `user_id`, signed with the users service's current key as a login signs it: the bench
    measures RSVPs, and 200 sign-ups (each a mail and a password hash) outlasted the set-up deadline at load 13+."""
    context = gatherly.process.host("users").context
    identity: Identity = context.extras["identity"]
    now = datetime.now(UTC)
    async with users_unit_of_work(context) as uow:
        key = signing_key_for(await uow.signing_keys.published(), now)
    token = identity.signer.access_token(key, user_id, now, session_id=str(uuid.uuid4()), token_id=uuid.uuid4().hex)
    return {"Authorization": f"Bearer {token}"}


async def _people(gatherly: RunningGatherly, count: int) -> tuple[Member, list[Member], str]:
    """A public group with an organizer and `count` members, put into the events service's read models (as its
    consumers of the groups service's events would), each with an access token."""
    organizer_id, group_id, ids = await group_in_read_models(gatherly, count)
    organizer = Member(organizer_id, await _token_for(gatherly, organizer_id))
    people = [Member(user_id, await _token_for(gatherly, user_id)) for user_id in ids]
    await gatherly.settle(timeout=120)
    return organizer, people, group_id


async def _schedule(gatherly: RunningGatherly, organizer: Member, group_id: str, capacity: int | None) -> str:
    response = await gatherly.client.post("/api/events", json=_event(group_id, capacity), headers=organizer.auth)
    assert response.status_code == 201, response.text
    event_id: str = response.json()["id"]
    return event_id


async def _schedule_each(gatherly: RunningGatherly, organizer: Member, group_id: str, count: int) -> list[str]:
    return [await _schedule(gatherly, organizer, group_id, None) for _ in range(count)]


class Cpu:
    """CPU time of this whole process (server, relay, consumers and clients) per request of a phase: on a shared
    machine wall-clock throughput depends on the neighbours, CPU per request much less."""

    def __init__(self) -> None:
        self.per_request_ms: list[float] = []

    def measure(self, started: float, requests: int) -> None:
        self.per_request_ms.append((time.process_time() - started) * 1000 / requests)

    def median(self) -> str:
        return f"{statistics.median(self.per_request_ms):.2f} ms CPU/request"


async def _answer_all(gatherly: RunningGatherly, pairs: list[tuple[Member, str]]) -> tuple[float, list[Any]]:
    async def answer(person: Member, event_id: str) -> Any:
        response = await gatherly.client.put(
            f"/api/events/{event_id}/rsvp", json={"response": "yes", "guests": 0}, headers=person.auth
        )
        assert response.status_code == 200, response.text
        return response.json()

    started = time.perf_counter()
    for profiler in PROFILER:
        profiler.enable()
    try:
        answers = await asyncio.gather(*(answer(p, e) for p, e in pairs))
    finally:
        for profiler in PROFILER:
            profiler.disable()
    return time.perf_counter() - started, answers


async def _baseline(gatherly: RunningGatherly, count: int) -> float:
    started = time.perf_counter()
    responses = await asyncio.gather(*(gatherly.client.get("/livez") for _ in range(count)))
    elapsed = time.perf_counter() - started
    assert all(r.status_code == 200 for r in responses)
    return count / elapsed


async def run(clients: int, seats: int, rounds: int) -> str:
    contention: list[float] = []
    spread: list[float] = []
    baseline: list[float] = []
    contention_settled: list[float] = []
    spread_settled: list[float] = []
    cpu = {name: Cpu() for name in ("contention", "contention settled", "spread", "spread settled", "baseline")}
    with tempfile.TemporaryDirectory() as folder:
        async with running_gatherly(Path(folder) / "data", **FAST) as gatherly:
            # As `gatherly up` does once started (app/server.py): without it every full collection walks the ~250,000
            # objects of the started process (0.1-0.2 s each, a few per phase), a cost the server does not have.
            # Its young collections as often as the server's (GATHERLY_GC_YOUNG_THRESHOLD).
            set_young_collection_threshold(gatherly.settings.gc_young_threshold)
            await freeze_startup_heap()
            organizer, people, group_id = await _phase("set-up", _people(gatherly, clients))
            for _ in range(rounds):
                started = time.process_time()
                baseline.append(await _baseline(gatherly, clients))
                cpu["baseline"].measure(started, clients)

                event_id = await _schedule(gatherly, organizer, group_id, seats)
                started, started_wall = time.process_time(), time.perf_counter()
                elapsed, answers = await _phase("contention", _answer_all(gatherly, [(p, event_id) for p in people]))
                cpu["contention"].measure(started, clients)
                await gatherly.settle(timeout=120)
                cpu["contention settled"].measure(started, clients)
                contention_settled.append(clients / (time.perf_counter() - started_wall))
                going = [a for a in answers if a["status"] == "going"]
                positions = sorted(a["waitlist_position"] for a in answers if a["status"] == "waitlisted")
                assert len(going) == seats, f"{len(going)} going for {seats} seats"
                assert positions == list(range(1, clients - seats + 1)), "waitlist positions are not 1..N-S"
                contention.append(clients / elapsed)

                events = await _phase("events", _schedule_each(gatherly, organizer, group_id, len(people)))
                await gatherly.settle(timeout=120)
                started, started_wall = time.process_time(), time.perf_counter()
                elapsed, answers = await _phase(
                    "no contention", _answer_all(gatherly, list(zip(people, events, strict=True)))
                )
                cpu["spread"].measure(started, clients)
                assert all(a["status"] == "going" for a in answers)
                spread.append(clients / elapsed)
                # What the answers published (relay, notifications, read models) runs mostly after the last answer:
                # counted here, it is the rate the server sustains; left out, it would land in the next round's
                # baseline. (settle() looks every 20 ms, so the wall rate is a little low; CPU is not affected.)
                await gatherly.settle(timeout=120)
                cpu["spread settled"].measure(started, clients)
                spread_settled.append(clients / (time.perf_counter() - started_wall))

    def median(values: list[float]) -> str:
        return f"{statistics.median(values):,.0f}/s (runs: {', '.join(f'{v:,.0f}' for v in values)})"

    def ratios(rates: list[float], phase: str) -> str:
        # Also from CPU per request, which the neighbours of a shared machine move much less than rates.
        by_cpu = statistics.median(cpu["baseline"].per_request_ms) / statistics.median(cpu[phase].per_request_ms)
        return f"{statistics.median(rates) / statistics.median(baseline):.2f} (by CPU per request: {by_cpu:.2f})"

    return "\n".join(
        [
            f"## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `bench/rsvp_contention.py`",
            "",
            f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
            f"{clients} concurrent clients in-process (httpx ASGITransport → gateway → events service), "
            f"median of {rounds} rounds.",
            "",
            f"Load average at the end (the machine is shared): {_load()}.",
            "",
            "| measurement | result | CPU per request (median) |",
            "|---|---|---|",
            f"| baseline: `GET /livez` (bare JSON) | {median(baseline)} | {cpu['baseline'].median()} |",
            f"| contention: {clients} yes to one event of {seats} seats | {median(contention)}; "
            f"exactly {seats} going, {clients - seats} waitlisted at positions 1..{clients - seats} (every round) "
            f"| {cpu['contention'].median()} |",
            f"| contention, until every message it published is handled | {median(contention_settled)} "
            f"| {cpu['contention settled'].median()} |",
            f"| no contention: {clients} yes, one event each (answered) | {median(spread)} "
            f"| {cpu['spread'].median()} |",
            f"| no contention, until every message it published is handled | {median(spread_settled)} "
            f"| {cpu['spread settled'].median()} |",
            f"| no contention / baseline, answered | {ratios(spread, 'spread')} | |",
            f"| **no contention / baseline, handled (the sustained rate)** "
            f"| {ratios(spread_settled, 'spread settled')} | |",
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
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--phase-timeout", type=float, default=PHASE_TIMEOUT_S, help="seconds a phase may take")
    parser.add_argument("--profile", type=Path, help="write the RSVP phases' cProfile summary (by own time) here")
    args = parser.parse_args()
    PHASE_LIMIT[0] = args.phase_timeout
    if args.profile:
        PROFILER.append(cProfile.Profile())
    report = asyncio.run(run(args.clients, args.seats, args.rounds))
    if args.profile:
        summary = io.StringIO()
        stats = pstats.Stats(PROFILER[0], stream=summary)
        stats.sort_stats("tottime").print_stats(60)
        stats.sort_stats("cumulative").print_stats(80)
        args.profile.write_text(summary.getvalue())
    args.report.parent.mkdir(parents=True, exist_ok=True)
    with args.report.open("a") as appended:
        appended.write("\n" + report)
    print(report)


if __name__ == "__main__":
    main()
