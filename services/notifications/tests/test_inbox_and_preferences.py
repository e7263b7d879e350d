"""The in-app inbox (unread count, read, read-all, pages), preferences, one-click unsubscribe and stream tickets,
through HTTP, with hostile input and other people's ids."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from gatherly.kernel.db import Database
from gatherly.kernel.testing import DB_BACKENDS, CursorCase, check_cursors_tied_to_filters, scratch_database
from gatherly.notifications import SERVICE
from gatherly.notifications.domain import Kind
from gatherly.notifications.store import TicketStore

pytestmark = pytest.mark.asyncio(loop_scope="module")
# `api` is conftest.NotificationsApi: one whole Gatherly per module and database backend.


async def _announce(api: Any, times: int) -> tuple[Any, Any]:
    olga, ann = await api.person("Olga"), await api.person("Ann")
    group_id = await api.group(olga, ann)
    for n in range(times):
        sent = await api.client.post(
            f"/api/groups/{group_id}/announcements", json={"subject": f"News {n}", "body": "."}, headers=olga.auth
        )
        assert sent.status_code == 202
    await api.running.settle()
    return olga, ann


async def test_the_inbox_pages_newest_first_and_counts_what_is_unread(api: Any) -> None:
    _, ann = await _announce(api, 5)
    first = await api.inbox(ann, limit=2)
    assert [i["title"] for i in first["items"]] == ["Runners: News 4", "Runners: News 3"]
    assert first["unread_count"] == 5
    second = await api.inbox(ann, limit=2, cursor=first["next_cursor"])
    third = await api.inbox(ann, limit=2, cursor=second["next_cursor"])
    assert [i["title"] for i in second["items"] + third["items"]] == [f"Runners: News {n}" for n in (2, 1, 0)]
    assert third["next_cursor"] is None

    read = await api.client.post(f"/api/notifications/{first['items'][0]['id']}/read", headers=ann.auth)
    assert read.status_code == 204
    again = await api.client.post(f"/api/notifications/{first['items'][0]['id']}/read", headers=ann.auth)
    assert again.status_code == 204
    unread = await api.inbox(ann, unread="true")
    assert unread["unread_count"] == 4
    assert [i["title"] for i in unread["items"]] == [f"Runners: News {n}" for n in (3, 2, 1, 0)]

    assert (await api.client.post("/api/notifications/read-all", headers=ann.auth)).status_code == 204
    after = await api.inbox(ann)
    assert after["unread_count"] == 0
    assert all(i["read_at"] is not None for i in after["items"])


async def test_an_inbox_cursor_goes_on_only_in_the_list_it_was_made_in(api: Any) -> None:
    """`?unread=` is a filter as a search's are: a cursor from the unread list would go on in the whole inbox (and
    the other way round), so there it gets the 422 of a forged cursor; `unread=1` is `unread=true`; one issued before
    cursors carried their filters is taken as then (kernel.testing.check_cursors_tied_to_filters)."""
    _, ann = await _announce(api, 5)
    [item, *_] = (await api.inbox(ann))["items"]
    assert (await api.client.post(f"/api/notifications/{item['id']}/read", headers=ann.auth)).status_code == 204
    cases: list[CursorCase] = [
        ({}, [{"unread": "false"}, {"unread": "0"}], [{"unread": "true"}]),
        ({"unread": "true"}, [{"unread": "1"}, {"unread": "yes"}], [{}, {"unread": "false"}]),
    ]
    await check_cursors_tied_to_filters(api.client, "/api/notifications", ann.auth, cases)


async def test_someone_elses_notification_is_not_found_and_stays_unread(api: Any) -> None:
    olga, ann = await _announce(api, 1)
    [item] = (await api.inbox(ann))["items"]
    refused = await api.client.post(f"/api/notifications/{item['id']}/read", headers=olga.auth)
    assert refused.status_code == 404
    assert refused.headers["content-type"] == "application/problem+json"
    unknown = await api.client.post("/api/notifications/no-such-id/read", headers=ann.auth)
    assert unknown.status_code == 404
    assert (await api.inbox(ann))["unread_count"] == 1


async def test_the_inbox_needs_a_token_and_refuses_a_cursor_it_did_not_issue(api: Any) -> None:
    assert (await api.client.get("/api/notifications")).status_code == 401
    person = await api.person()
    huge = base64.urlsafe_b64encode(json.dumps({"before": 10**30}).encode()).decode()  # overflows a 64-bit integer
    negative = base64.urlsafe_b64encode(json.dumps({"before": -1}).encode()).decode()
    # not base64 JSON; {"before": "x"}; []; a position no inbox has
    for cursor in ("garbage", "eyJiZWZvcmUiOiAieCJ9", "W10", huge, negative):
        bad = await api.client.get("/api/notifications", params={"cursor": cursor}, headers=person.auth)
        assert bad.status_code == 422, cursor
        assert bad.json()["errors"][0]["field"] == "cursor"
    too_many = await api.client.get("/api/notifications", params={"limit": 101}, headers=person.auth)
    assert too_many.status_code == 422


async def test_preferences_start_at_the_defaults_and_are_replaced_by_a_put(api: Any) -> None:
    ann = await api.person()
    defaults = (await api.client.get("/api/notifications/preferences", headers=ann.auth)).json()
    assert defaults["email"]["event_scheduled"] is True
    assert defaults["email"]["comment_posted"] is False
    assert {kind for kind, on in defaults["push"].items() if not on} == {"weekly_digest"}
    assert defaults["reminders"] == {"hours_before": [24, 2]}

    chosen = {"email": {"comment_posted": True}, "push": {"event_reminder": False}, "reminders": {"hours_before": [1]}}
    put = await api.client.put("/api/notifications/preferences", json=chosen, headers=ann.auth)
    assert put.status_code == 200, put.text
    got = (await api.client.get("/api/notifications/preferences", headers=ann.auth)).json()
    assert got == put.json()
    assert got["email"]["comment_posted"] is True and got["push"]["event_reminder"] is False
    assert got["reminders"] == {"hours_before": [1]}

    # A put replaces: what it leaves out goes back to the default.
    await api.client.put("/api/notifications/preferences", json={}, headers=ann.auth)
    assert (await api.client.get("/api/notifications/preferences", headers=ann.auth)).json() == defaults


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": {"no_such_kind": False}}, "email.no_such_kind"),
        ({"push": {"event_scheduled": "yes"}}, "push.event_scheduled"),
        ({"reminders": {"hours_before": [0]}}, "reminders.hours_before"),
        ({"reminders": {"hours_before": [10**9]}}, "reminders.hours_before"),
        ({"reminders": {"hours_before": [1, 2, 3, 4, 5, 6]}}, "reminders.hours_before"),
        ({"reminders": {"hours_before": "24"}}, "reminders.hours_before"),
        ({"email": {"event_scheduled\u0000": True}}, "email"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_bad_preferences_are_refused_naming_the_field(api: Any, body: dict[str, Any], field: str) -> None:
    ann = await api.person()
    refused = await api.client.put("/api/notifications/preferences", json=body, headers=ann.auth)
    assert refused.status_code == 422, refused.text
    assert any(e["field"].startswith(field) for e in refused.json()["errors"]), refused.json()


async def test_every_unknown_kind_of_a_preferences_put_is_named(api: Any) -> None:
    """One answer names each field at fault (each unknown kind of either channel, and the reminders), as the
    kernel's validation does for a body's fields; one alone is refused as it always was, its message the detail."""
    ann = await api.person()
    before = (await api.client.get("/api/notifications/preferences", headers=ann.auth)).json()
    known = "Unknown kind; known: " + ", ".join(sorted(kind.value for kind in Kind)) + "."
    body = {
        "email": {"nope_a": True, "event_scheduled": False, "nope_b": False},
        "push": {"nope_c": True},
        "reminders": {"hours_before": [0]},
    }
    refused = await api.client.put("/api/notifications/preferences", json=body, headers=ann.auth)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json() == {
        "type": "about:blank",
        "title": "Invalid input",
        "status": 422,
        "detail": "The request is not valid.",
        "errors": [
            {"field": "email.nope_a", "message": known},
            {"field": "email.nope_b", "message": known},
            {"field": "push.nope_c", "message": known},
            {"field": "reminders.hours_before", "message": "Each reminder is 1 to 672 hours before the event."},
        ],
    }
    one = await api.client.put("/api/notifications/preferences", json={"push": {"nope": True}}, headers=ann.auth)
    assert one.status_code == 422
    assert one.json() == {
        "type": "about:blank",
        "title": "Invalid input",
        "status": 422,
        "detail": known,
        "errors": [{"field": "push.nope", "message": known}],
    }
    assert (await api.client.get("/api/notifications/preferences", headers=ann.auth)).json() == before


async def test_unknown_kinds_with_the_same_long_beginning_are_each_named_in_full(api: Any) -> None:
    """Each unknown kind is its own fault, named whole as a kind whose value is not a boolean is: names cut at 50
    characters made two different kinds one field, twice."""
    ann = await api.person()
    known = "Unknown kind; known: " + ", ".join(sorted(kind.value for kind in Kind)) + "."
    common = "event_scheduled_" + "x" * 60
    names = [f"{common}_first", f"{common}_second"]
    body = {"email": {name: True for name in names}}
    refused = await api.client.put("/api/notifications/preferences", json=body, headers=ann.auth)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"] == [{"field": f"email.{name}", "message": known} for name in names]
    typed = {"push": {names[0]: "yes"}}
    not_boolean = await api.client.put("/api/notifications/preferences", json=typed, headers=ann.auth)
    assert [e["field"] for e in not_boolean.json()["errors"]] == [f"push.{names[0]}"]


async def test_the_emailed_unsubscribe_link_switches_that_kind_off_in_one_click_without_login(api: Any) -> None:
    _, ann = await _announce(api, 1)
    mail = await api.wait_for_mail(ann, "Runners: News 0")
    link = mail["List-Unsubscribe"].strip("<>")
    assert link in mail.get_body(preferencelist=("plain",)).get_content()
    path = urllib.parse.urlsplit(link)
    target = f"{path.path}?{path.query}"

    page = await api.client.get(target)
    assert page.status_code == 200 and '<form method="post"' in page.text
    prefs = await api.client.get("/api/notifications/preferences", headers=ann.auth)
    assert prefs.json()["email"]["group_announcement"] is True, "a GET (a mail scanner) never unsubscribes"

    # RFC 8058: the mail client POSTs `List-Unsubscribe=One-Click` to the URL, with no cookie or token.
    done = await api.client.post(
        target,
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200, done.text
    prefs = (await api.client.get("/api/notifications/preferences", headers=ann.auth)).json()
    assert prefs["email"]["group_announcement"] is False
    assert prefs["email"]["event_scheduled"] is True, "only the kind of the email"


async def test_a_tampered_unsubscribe_link_changes_nothing(api: Any) -> None:
    olga, ann = await _announce(api, 1)
    mail = await api.wait_for_mail(ann, "Runners: News 0")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(mail["List-Unsubscribe"].strip("<>")).query))
    for changed in ({"user": olga.user_id}, {"kind": "event_scheduled"}, {"sig": "0" * 40}):
        refused = await api.client.post("/api/notifications/unsubscribe", params={**query, **changed})
        assert refused.status_code == 404, changed
    unknown_kind = await api.client.post("/api/notifications/unsubscribe", params={**query, "kind": "nope"})
    assert unknown_kind.status_code == 422
    assert unknown_kind.json()["errors"][0]["field"] == "kind"
    for person in (olga, ann):
        prefs = (await api.client.get("/api/notifications/preferences", headers=person.auth)).json()
        assert all(prefs["email"][k] for k in ("group_announcement", "event_scheduled"))


async def test_a_stream_ticket_works_once(api: Any) -> None:
    ann = await api.person()
    assert (await api.client.post("/api/notifications/stream-ticket")).status_code == 401
    issued = await api.client.post("/api/notifications/stream-ticket", headers=ann.auth)
    assert issued.status_code == 200
    ticket = issued.json()["ticket"]
    # The ticket is spent by the first stream that presents it (tested live in test_stream.py); a second is 401.
    async with api.client.stream("GET", "/api/notifications/stream", params={"ticket": "made-up"}) as refused:
        assert refused.status_code == 401
    assert len(ticket) >= 40


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_two_redemptions_of_one_ticket_at_once_let_only_one_stream_in(
    tmp_path: Path, database_backend: str
) -> None:
    """The race is PostgreSQL's (READ COMMITTED: the second redemption reads the row the first is deleting);
    SQLite's one writer at a time rules it out, and the test holds there too."""
    now = datetime.now(UTC)
    async with scratch_database(database_backend, tmp_path) as url:
        setup, first, second = Database(url), Database(url), Database(url)
        await setup.migrate(SERVICE.migrations)
        try:
            async with setup.writing() as session:
                await TicketStore(session).add("hash", "ann", now + timedelta(seconds=60), now)
            async with first.writing() as session:
                taken_first = await TicketStore(session).take("hash", now)
                # The second redemption starts while the first's is not committed yet, and waits on its row lock.
                racing = asyncio.create_task(_take(second, "hash", now))
                if database_backend == "postgresql":
                    await _until_a_lock_is_awaited(setup)
            taken_second = await racing
        finally:
            for db in (setup, first, second):
                await db.dispose()
    assert (taken_first, taken_second) == ("ann", None)


async def _take(db: Database, ticket_hash: str, now: datetime) -> str | None:
    async with db.writing() as session:
        return await TicketStore(session).take(ticket_hash, now)


async def _until_a_lock_is_awaited(db: Database) -> None:
    for _ in range(500):
        async with db.read_session() as session:
            waiting = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE NOT l.granted AND a.datname = current_database()"
                )
            )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the second redemption never waited for the first")
