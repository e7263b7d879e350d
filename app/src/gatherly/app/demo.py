"""Demo data for `gatherly up`: people and groups to look at on a fresh start, loaded once.

It is loaded through the services' own HTTP API (sign up, confirm through the emailed link, log in, create),
so it obeys every rule real users do and exercises the whole path, events and read models included."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    log.info("demo data loaded", people=len(PEOPLE), groups=len(GROUPS), password=DEMO_PASSWORD)


async def _load(app: ASGIApp, settings: Settings) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=settings.effective_public_url) as client:
        auth = {p.email: await _person(client, settings.mail_dir, p) for p in PEOPLE}
        for spec in GROUPS:
            owner = auth[spec["owner"]]
            body = {k: v for k, v in spec.items() if k not in ("owner", "members", "requests")}
            created = await client.post("/api/groups", json=body, headers=owner)
            created.raise_for_status()
            group_id = created.json()["id"]
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
