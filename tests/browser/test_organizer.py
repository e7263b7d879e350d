"""Organizer tools in a real browser: roles, bans, requests denied, announcements, editing a group with its banner,
.ics import; a recurring event scheduled, edited for one occurrence with a cover, and the check-in list. Also an
attendee's guests and comments."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from browsing import DESKTOP, PHONE, NewContext, Server, check_accessibility, log_in, picture, screenshot
from playwright.sync_api import expect

BERLIN = {"lat": 52.52, "lng": 13.405}
NEXT_YEAR = datetime.now(UTC).year + 1


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _until(check: Callable[[], bool], seconds: float = 20) -> None:
    """For what other services learn through events (eventually): checked until it holds."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.2)


def _group(server: Server, token: str, **fields: Any) -> str:
    with server.api() as client:
        body = {"name": f"Climbers {time.time_ns()}", "location": BERLIN, "city": "Berlin", **fields}
        response = client.post("/api/groups", json=body, headers=_auth(token))
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def _join(server: Server, token: str, group_id: str) -> None:
    with server.api() as client:
        assert client.post(f"/api/groups/{group_id}/join", json={}, headers=_auth(token)).status_code == 200


def _membership(server: Server, token: str, group_id: str) -> Any:
    with server.api() as client:
        return client.get(f"/api/groups/{group_id}", headers=_auth(token)).json()["my_membership"]


def _event(server: Server, token: str, group_id: str, **fields: Any) -> str:
    starts = datetime.now(UTC) + timedelta(days=6)
    body = {
        "group_id": group_id,
        "title": f"Bouldering {time.time_ns()}",
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=2)).isoformat(),
        "timezone": "Europe/Berlin",
        "online_url": "https://meet.example.org/climb",
        **fields,
    }
    with server.api() as client:
        deadline = time.monotonic() + 20
        while True:
            response = client.post("/api/events", json=body, headers=_auth(token))
            if response.status_code == 201 or time.monotonic() > deadline:
                assert response.status_code == 201, response.text
                return str(response.json()["id"])
            time.sleep(0.2)


def test_an_organizer_changes_roles_bans_denies_announces_edits_and_imports(
    server: Server, new_context: NewContext
) -> None:
    organizer_email, _ = server.person("Olive")
    member_email, member = server.person("Max")
    asking_email, asking = server.person("Rita")
    organizer, member_token = server.token_of(organizer_email), server.token_of(member_email)
    group_id = _group(server, organizer)
    _join(server, member_token, group_id)
    strict_id = _group(server, organizer, join_policy="approval")
    with server.api() as client:
        asked = client.post(f"/api/groups/{strict_id}/join", json={}, headers=_auth(server.token_of(asking_email)))
        assert asked.status_code == 200

    page = new_context(DESKTOP).new_page()
    log_in(page, organizer_email, f"/groups/{group_id}")
    members = page.locator("ion-item", has_text=member)
    shown_role = members.locator(".muted")

    # Roles: promoted, then back.
    page.get_by_label(f"Role of {member}").select_option("co_organizer")
    expect(shown_role).to_have_text("co-organizer")
    assert _membership(server, member_token, group_id)["role"] == "co_organizer"
    page.get_by_label(f"Role of {member}").select_option("member")
    expect(shown_role).to_have_text("member")
    assert _membership(server, member_token, group_id)["role"] == "member"

    # An announcement reaches the members' inboxes.
    subject = f"Crag closed {time.time_ns()}"
    page.get_by_label("Subject").fill(subject)
    page.get_by_label("Message").fill("The north wall is closed this week.")
    page.get_by_role("button", name="Send to all members").click()
    expect(page.get_by_text("The announcement is on its way to the members.")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "group-organizer-tools")

    def announced() -> bool:
        with server.api() as client:
            inbox = client.get("/api/notifications", headers=_auth(member_token)).json()
        return any(subject in n["title"] + n["body"] for n in inbox["items"])

    _until(announced)

    # A calendar from elsewhere, imported (the events service hears of a new group a moment after it exists).
    title = f"Imported meetup {time.time_ns()}"
    ics = "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Other//Platform//EN",
        "BEGIN:VEVENT", f"UID:{time.time_ns()}@other", "DTSTAMP:20240101T000000Z", f"SUMMARY:{title}",
        f"DTSTART;TZID=Europe/Berlin:{NEXT_YEAR}0715T190000", f"DTEND;TZID=Europe/Berlin:{NEXT_YEAR}0715T220000",
        "LOCATION:Boulder hall", "END:VEVENT", "END:VCALENDAR", "",
    ])  # fmt: skip
    report = page.get_by_role("status").filter(has_text="Imported")
    deadline = time.monotonic() + 20
    while True:
        page.get_by_label("Calendar file (.ics)").set_input_files(
            {"name": "other.ics", "mimeType": "text/calendar", "buffer": ics.encode()}
        )
        try:
            expect(report).to_contain_text("Imported: 1 new, 0 updated, 0 skipped.", timeout=2_000)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    expect(page.get_by_role("heading", name=title)).to_be_visible()

    # A ban: gone from the members, and cannot come back.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Ban {member}").click()
    expect(members).to_have_count(0)
    assert _membership(server, member_token, group_id)["status"] == "banned"

    # Editing the group, with a banner.
    page.get_by_role("button", name="Edit the group").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Edit the group")
    page.get_by_label("Banner picture").set_input_files(
        {"name": "banner.png", "mimeType": "image/png", "buffer": picture(300)}
    )
    expect(page.get_by_role("status")).to_have_text("The picture is saved.", timeout=30_000)
    expect(page.get_by_role("img", name=re.compile("^The group.s banner$"))).to_be_visible()
    renamed = f"Boulderers {time.time_ns()}"
    page.get_by_label("Name").fill(renamed)
    check_accessibility(page)
    page.get_by_role("button", name="Save the group").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(renamed)
    with server.api() as client:
        group = client.get(f"/api/groups/{group_id}").json()
    assert group["name"] == renamed and group["banner_image_id"]

    # A request to join the other group, denied.
    page.goto(f"/groups/{strict_id}")
    page.locator("ion-item", has_text=asking).get_by_role("button", name="Deny").click()
    expect(page.get_by_text("No requests waiting.")).to_be_visible()
    assert _membership(server, server.token_of(asking_email), strict_id) is None


def test_a_recurring_event_is_scheduled_one_occurrence_edited_with_a_cover_and_people_checked_in(
    server: Server, new_context: NewContext
) -> None:
    organizer_email, _ = server.person("Otto")
    member_email, member = server.person("Mara")
    organizer, member_token = server.token_of(organizer_email), server.token_of(member_email)
    group_id = _group(server, organizer)
    _join(server, member_token, group_id)

    page = new_context(DESKTOP).new_page()
    log_in(page, organizer_email, f"/groups/{group_id}/events/new")
    title = f"Weekly session {time.time_ns()}"
    starts = datetime.now(UTC) + timedelta(days=2)
    page.get_by_label("Title").fill(title)
    page.get_by_label("Starts").fill(starts.strftime("%Y-%m-%dT18:00"))
    page.get_by_label("Ends").fill(starts.strftime("%Y-%m-%dT20:00"))
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_label("Venue name").fill("The climbing hall")
    page.get_by_label("Repeats (an RRULE such as FREQ=WEEKLY;COUNT=4; empty: once)").fill("FREQ=WEEKLY;COUNT=3")
    deadline = time.monotonic() + 20
    while True:  # the events service hears of the new group a moment after it exists
        page.get_by_role("button", name="Schedule the event").click()
        try:
            expect(page).to_have_url(re.compile(r"/events/[0-9a-f-]+$"), timeout=2_000)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    event_id = page.url.rsplit("/", 1)[1]

    def listed() -> bool:
        with server.api() as client:
            series = client.get("/api/events", params={"group_id": group_id}).json()["items"]
        return [e["title"] for e in series] == [title] * 3

    _until(listed)

    # The check-in list: the member going is checked in at the door.
    def answered() -> bool:  # the events service hears of the member's joining through events
        with server.api() as client:
            rsvp = client.put(f"/api/events/{event_id}/rsvp", json={"response": "yes"}, headers=_auth(member_token))
            return rsvp.status_code == 200

    _until(answered)
    page.reload()
    expect(page.get_by_role("heading", name="Check-in list")).to_be_visible()
    expect(page.get_by_text("0 checked in")).to_be_visible()
    page.get_by_role("button", name=f"Check in {member}").click()
    expect(page.get_by_text("1 checked in")).to_be_visible()
    expect(page.locator("ion-item", has_text=member)).to_contain_text("checked in")
    check_accessibility(page)
    screenshot(page, "event-check-in")
    with server.api() as client:
        assert client.get(f"/api/events/{event_id}").json()["attendance"] == 1

    # This occurrence only: a new title, venue (placed on the map) and cover; the others keep theirs.
    page.get_by_role("button", name="Edit the event").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Edit the event")
    expect(page.get_by_label("only this one")).to_be_checked()
    cover = {"name": "cover.png", "mimeType": "image/png", "buffer": picture(300)}
    page.get_by_label("Cover picture").set_input_files(cover)
    expect(page.get_by_role("img", name=re.compile("^The event.s cover$"))).to_be_visible(timeout=30_000)
    page.get_by_label("Title").fill(f"{title} (special)")
    expect(page.get_by_label("Venue name")).to_have_value("The climbing hall")
    page.get_by_label("Venue name").fill("The bouldering hall")
    page.get_by_role("region", name="Where: tap the map to place the venue").click()
    expect(page.locator(".pin-picked")).to_have_count(1)
    check_accessibility(page)
    screenshot(page, "edit-event")
    page.get_by_role("button", name="Save the event").click()
    expect(page).to_have_url(re.compile(f"/events/{event_id}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(f"{title} (special)")
    with server.api() as client:
        series = client.get("/api/events", params={"group_id": group_id}).json()["items"]
        edited = client.get(f"/api/events/{event_id}").json()
    assert edited["cover_image_id"]
    assert edited["venue"]["name"] == "The bouldering hall" and edited["venue"]["location"] is not None
    assert sorted(e["title"] for e in series) == [title, title, f"{title} (special)"]
    venues = sorted(e["venue"]["name"] for e in series)
    assert venues == ["The bouldering hall", "The climbing hall", "The climbing hall"]


def test_guests_beyond_the_limit_are_named_and_comments_are_posted_as_text(
    server: Server, new_context: NewContext
) -> None:
    organizer_email, _ = server.person("Gert")
    member_email, member = server.person("Hanna")
    organizer, member_token = server.token_of(organizer_email), server.token_of(member_email)
    group_id = _group(server, organizer)
    _join(server, member_token, group_id)
    event_id = _event(server, organizer, group_id, capacity=10, guest_limit=2)

    page = new_context(PHONE).new_page()
    log_in(page, member_email, f"/events/{event_id}")
    guests = page.get_by_label(re.compile(r"^Guests \(0.2\)$"))  # 0 to 2
    guests.fill("1")
    deadline = time.monotonic() + 20
    while True:  # the events service hears of the member's joining through events
        page.get_by_role("button", name="Going", exact=True).click()
        try:
            expect(page.locator(".rsvp-status")).to_have_text("You are going.", timeout=2_000)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    expect(page.get_by_text("2 of 10 seats taken")).to_be_visible()
    expect(page.locator("ion-item", has_text=member)).to_contain_text("+1")
    guests.fill("5")  # over the limit: named at the field, and the answer stays as it was
    page.get_by_role("button", name="Going", exact=True).click()
    expect(page.locator("ion-input.ion-invalid .error-text")).to_contain_text(re.compile(r"\S"))
    expect(page.get_by_text("2 of 10 seats taken")).to_be_visible()

    comment = page.get_by_label("Your comment")
    page.get_by_role("button", name="Post").click()
    expect(page.locator("ion-textarea.ion-invalid .error-text")).to_contain_text(re.compile(r"\S"))
    said = "See you there <b>early</b>!"
    comment.fill(said)
    page.get_by_role("button", name="Post").click()
    posted = page.locator("ion-item", has_text=said)
    expect(posted).to_contain_text(member)
    assert page.locator("section b", has_text="early").count() == 0  # text, not markup
    expect(comment).to_have_value("")
    check_accessibility(page)
    screenshot(page, "event-comments")
