"""Demo data for `gatherly up`: people, groups and their upcoming events to look at on a fresh start, loaded once.

It is loaded through the services' own HTTP API (sign up, confirm through the emailed link, log in, create),
so it obeys every rule real users do and exercises the whole path, events and read models included. The events
service learns of groups and memberships from the groups service's events, so scheduling and answering wait
(briefly) until its read models have caught up, as a real client retrying would."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import structlog
from starlette.types import ASGIApp

from gatherly.app.devmail import newest_link_token
from gatherly.kernel.settings import Settings

log = structlog.get_logger(__name__)

DEMO_PASSWORD = "gatherly-demo-password"


@dataclass(frozen=True)
class DemoPerson:
    email: str
    display_name: str
    city: str
    lat: float
    lng: float
    topics: tuple[str, ...]


PEOPLE = (
    DemoPerson("ada@demo.gatherly.local", "Ada Organizer", "Berlin", 52.52, 13.405, ("tech", "python")),
    DemoPerson("ben@demo.gatherly.local", "Ben Hiker", "Munich", 48.137, 11.575, ("outdoors", "hiking")),
    DemoPerson("cleo@demo.gatherly.local", "Cleo Reader", "Hamburg", 53.551, 9.993, ("books", "writing")),
    DemoPerson("dev@demo.gatherly.local", "Dev Member", "Berlin", 52.5, 13.42, ("tech", "books")),
)

GROUPS: tuple[dict[str, Any], ...] = (
    {
        "owner": "ada@demo.gatherly.local",
        "name": "Berlin Python Meetup",
        "description": "Talks, lightning talks and pairing for Pythonistas of every level.",
        "topics": ["tech", "python"],
        "city": "Berlin",
        "location": {"lat": 52.5200, "lng": 13.4050},
        "visibility": "public",
        "join_policy": "open",
        "questions": [],
        "members": ["dev@demo.gatherly.local", "cleo@demo.gatherly.local"],
    },
    {
        "owner": "ben@demo.gatherly.local",
        "name": "Alpine Weekend Hikers",
        "description": "Day hikes and hut tours from Munich. Bring boots and a good mood.",
        "topics": ["outdoors", "hiking"],
        "city": "Munich",
        "location": {"lat": 48.1372, "lng": 11.5756},
        "visibility": "public",
        "join_policy": "approval",
        "questions": ["How much hiking experience do you have?"],
        # Approval groups: these people ask to join with their answers; "members" are approved, the rest wait.
        "requests": {
            "ada@demo.gatherly.local": ["Alpine huts every summer since I was ten."],
            "dev@demo.gatherly.local": ["None yet, but keen to learn!"],
        },
        "members": ["ada@demo.gatherly.local"],
    },
    {
        "owner": "cleo@demo.gatherly.local",
        "name": "Hamburg Book Circle",
        "description": "One book a month, one evening to talk about it.",
        "topics": ["books"],
        "city": "Hamburg",
        "location": {"lat": 53.5511, "lng": 9.9937},
        "visibility": "public",
        "join_policy": "open",
        "questions": [],
        "members": ["dev@demo.gatherly.local"],
    },
    {
        "owner": "ada@demo.gatherly.local",
        "name": "Berlin Open Source Maintainers",
        "description": "A private circle for maintainers to share the load.",
        "topics": ["tech", "open-source"],
        "city": "Berlin",
        "location": {"lat": 52.5000, "lng": 13.4200},
        "visibility": "private",
        "join_policy": "approval",
        "questions": ["Which project do you maintain?"],
        "requests": {"dev@demo.gatherly.local": ["A Python date-parsing library."]},
        "members": ["dev@demo.gatherly.local"],
    },
)


# Upcoming events of the demo groups: one-off and recurring, one full with a waitlist, one online. `days` is how far
# ahead the (first) occurrence is, at `hour` local time; `going` answer yes in this order (guests after a colon).
EVENTS: tuple[dict[str, Any], ...] = (
    {
        "group": "Berlin Python Meetup",
        "leader": "ada@demo.gatherly.local",
        "title": "Monthly Python Meetup",
        "description": "Two talks, pizza, and time to talk. Second Tuesday of every month.",
        "days": 10,
        "hour": 19,
        "timezone": "Europe/Berlin",
        "venue": {"name": "c-base", "address": "Rungestrasse 20, Berlin", "location": {"lat": 52.5130, "lng": 13.4200}},
        "capacity": 80,
        "recurrence": "FREQ=MONTHLY;BYDAY=2TU",
        "going": ["dev@demo.gatherly.local", "cleo@demo.gatherly.local"],
        "comments": [
            ("dev@demo.gatherly.local", "Is there a beginners' corner this time?"),
            ("ada@demo.gatherly.local", "Yes: the first half hour, by the window."),
        ],
    },
    {
        "group": "Berlin Python Meetup",
        "leader": "ada@demo.gatherly.local",
        "title": "Lightning talks: 5 minutes, any topic",
        "description": "Small room, few seats: say no if you cannot come, so the next on the waitlist can.",
        "days": 4,
        "hour": 18,
        "timezone": "Europe/Berlin",
        "venue": {"name": "Betahaus", "address": "Rudi-Dutschke-Strasse 23, Berlin"},
        "capacity": 3,
        "guest_limit": 1,
        "going": ["ada@demo.gatherly.local", "dev@demo.gatherly.local:1", "cleo@demo.gatherly.local"],
        "comments": [("cleo@demo.gatherly.local", "On the waitlist: happy to take a seat if one frees up.")],
    },
    {
        "group": "Hamburg Book Circle",
        "leader": "cleo@demo.gatherly.local",
        "title": "Book circle online: this month's novel",
        "description": "We meet on video this time.",
        "days": 6,
        "hour": 20,
        "timezone": "Europe/Berlin",
        "online_url": "https://meet.example.org/hamburg-book-circle",
        "going": ["cleo@demo.gatherly.local", "dev@demo.gatherly.local"],
        "comments": [("dev@demo.gatherly.local", "Halfway through, no spoilers please!")],
    },
    {
        "group": "Alpine Weekend Hikers",
        "leader": "ben@demo.gatherly.local",
        "title": "Saturday day hike",
        "description": "A different trail every other Saturday; meet at the station.",
        "days": 12,
        "hour": 7,
        "timezone": "Europe/Berlin",
        "venue": {
            "name": "Munich Central Station",
            "address": "Bayerstrasse 10A, Munich",
            "location": {"lat": 48.1402, "lng": 11.5600},
        },
        "capacity": 12,
        "guest_limit": 2,
        "recurrence": "FREQ=WEEKLY;INTERVAL=2;BYDAY=SA;COUNT=10",
        "going": ["ben@demo.gatherly.local", "ada@demo.gatherly.local:2"],
        "comments": [("ada@demo.gatherly.local", "Bringing two friends from the climbing gym.")],
    },
)


def _event_body(spec: dict[str, Any], group_id: str, now: datetime) -> dict[str, Any]:
    zone = ZoneInfo(spec["timezone"])
    day = (now + timedelta(days=spec["days"])).astimezone(zone).date()
    starts = datetime(day.year, day.month, day.day, spec["hour"], tzinfo=zone)
    hours = 9 if spec["hour"] < 9 else 2
    fields = ("title", "description", "timezone", "venue", "online_url", "capacity", "guest_limit", "recurrence")
    return {
        "group_id": group_id,
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=hours)).isoformat(),
        **{name: spec[name] for name in fields if name in spec},
    }


async def _once_known(
    client: httpx.AsyncClient, method: str, url: str, body: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    """The response once the events service's read models know the group and its members: until then it answers
    404 (no such group) or 403 (not a member yet), which a client retries for a while."""
    deadline = time.monotonic() + 30.0
    while True:
        response = await client.request(method, url, json=body, headers=headers)
        if response.status_code not in (403, 404) or time.monotonic() > deadline:
            response.raise_for_status()
            return response
        await asyncio.sleep(0.1)


async def _load_events(client: httpx.AsyncClient, auth: dict[str, dict[str, str]], groups: dict[str, str]) -> None:
    now = datetime.now(UTC)
    for spec in EVENTS:
        body = _event_body(spec, groups[spec["group"]], now)
        leader = auth[spec["leader"]]
        created = await _once_known(client, "POST", "/api/events", body, leader)
        event_id = created.json()["id"]
        for answer in spec["going"]:
            email, _, guests = answer.partition(":")
            rsvp = {"response": "yes", "guests": int(guests or 0)}
            await _once_known(client, "PUT", f"/api/events/{event_id}/rsvp", rsvp, auth[email])
        for email, text in spec["comments"]:
            comment = {"body": text}
            (
                await client.post(f"/api/events/{event_id}/comments", json=comment, headers=auth[email])
            ).raise_for_status()


async def _confirmation_token(mail_dir: Path, email: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if token := await asyncio.to_thread(newest_link_token, mail_dir, email):
            return token
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no confirmation email for {email}")


async def _person(client: httpx.AsyncClient, mail_dir: Path, person: DemoPerson) -> dict[str, str]:
    signup = {"email": person.email, "password": DEMO_PASSWORD, "display_name": person.display_name}
    (await client.post("/api/auth/signup", json=signup)).raise_for_status()
    token = await _confirmation_token(mail_dir, person.email)
    (await client.post("/api/auth/confirm", json={"token": token})).raise_for_status()
    login = await client.post("/api/auth/login", json={"email": person.email, "password": DEMO_PASSWORD})
    login.raise_for_status()
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    profile = {"city": person.city, "location": {"lat": person.lat, "lng": person.lng}, "topics": list(person.topics)}
    (await client.patch("/api/users/me", json=profile, headers=headers)).raise_for_status()
    return headers


async def _user_id(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    me = await client.get("/api/users/me", headers=headers)
    me.raise_for_status()
    user_id: str = me.json()["id"]
    return user_id


async def seed_demo(app: ASGIApp, settings: Settings) -> None:
    """Load the demo through `app` (the whole process) unless this data directory has it already (a marker file
    says so)."""
    marker = settings.data_dir / ".demo-loaded"
    if marker.exists():
        return
    if settings.mail_backend.value != "files":
        log.info("demo data needs the file mailer (it confirms accounts through the emailed links); skipped")
        return
    try:
        await _load(app, settings)
    except (httpx.HTTPError, TimeoutError) as error:
        # The app is still worth serving without its demo; the next start tries again (no marker written).
        log.error("demo data could not be loaded", error=repr(error))
        return
    marker.write_text("demo data loaded; delete this file and the databases to load it again\n")
    log.info("demo data loaded", people=len(PEOPLE), groups=len(GROUPS), events=len(EVENTS), password=DEMO_PASSWORD)


async def _load(app: ASGIApp, settings: Settings) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=settings.effective_public_url) as client:
        auth = {p.email: await _person(client, settings.mail_dir, p) for p in PEOPLE}
        groups: dict[str, str] = {}
        for spec in GROUPS:
            owner = auth[spec["owner"]]
            body = {k: v for k, v in spec.items() if k not in ("owner", "members", "requests")}
            created = await client.post("/api/groups", json=body, headers=owner)
            created.raise_for_status()
            group_id = created.json()["id"]
            groups[spec["name"]] = group_id
            requests: dict[str, list[str]] = spec.get("requests", {})
            for person in dict.fromkeys([*spec["members"], *requests]):
                answers = {"answers": requests.get(person, [])}
                (
                    await client.post(f"/api/groups/{group_id}/join", json=answers, headers=auth[person])
                ).raise_for_status()
            for person in requests.keys() & set(spec["members"]):
                user_id = await _user_id(client, auth[person])
                approve = f"/api/groups/{group_id}/requests/{user_id}/approve"
                (await client.post(approve, headers=owner)).raise_for_status()
        await _load_events(client, auth, groups)
