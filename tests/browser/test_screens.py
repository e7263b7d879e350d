"""More of the web app in a real browser: a typed city and the filters, silent token refresh, joining by approval
with questions, leaving, and hostile text shown as text."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from browsing import DESKTOP, PASSWORD, PHONE, NewContext, Server, check_accessibility, log_in, screenshot
from playwright.sync_api import expect

BERLIN = {"lat": 52.52, "lng": 13.405}


def _group(server: Server, token: str, **fields: Any) -> dict[str, Any]:
    with server.api() as client:
        body = {"name": f"Group {time.time_ns()}", "location": BERLIN, "city": "Berlin", **fields}
        response = client.post("/api/groups", json=body, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 201, response.text
        return dict(response.json())


def _event(server: Server, token: str, group_id: str, title: str, starts: datetime | None = None) -> str:
    """Scheduled once the events service has heard of the group (eventual: retried for a few seconds)."""
    starts = starts or datetime.now(UTC) + timedelta(days=5)
    body = {
        "group_id": group_id,
        "title": title,
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=2)).isoformat(),
        "timezone": "Europe/Berlin",
        "venue": {"name": "Library", "location": {"lat": 52.51, "lng": 13.39}},
    }
    deadline = time.monotonic() + 20
    with server.api() as client:
        while True:
            response = client.post("/api/events", json=body, headers={"Authorization": f"Bearer {token}"})
            if response.status_code == 201 or time.monotonic() > deadline:
                assert response.status_code == 201, response.text
                return str(response.json()["id"])
            time.sleep(0.2)


def test_a_typed_city_is_found_in_the_gazetteer_and_the_filters_narrow_what_is_shown(
    server: Server, new_context: NewContext
) -> None:
    email, _ = server.person("Clara")
    token = server.token_of(email)
    group = _group(server, token, topics=["chess"])
    title = f"Blitz evening {time.time_ns()}"
    _event(server, token, group["id"], title)

    page = new_context(DESKTOP).new_page()
    page.goto("/")
    page.get_by_label("City").fill("Atlantis")
    page.get_by_role("button", name="Find").click()
    expect(page.locator("ion-input.ion-invalid .error-text")).to_contain_text("No city called “Atlantis”")

    page.get_by_label("City").fill("Hamburg")
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("status")).to_have_text("Near Hamburg, Germany")
    expect(page.get_by_text("No events match.")).to_be_visible()  # Berlin is 250 km away; 25 km is the radius

    page.get_by_label("City").fill("berlin")
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("status")).to_have_text("Near Berlin, Germany")
    expect(page.get_by_text(title)).to_be_visible()
    page.get_by_label("Topic").fill("knitting")
    expect(page.get_by_text(title)).to_have_count(0)
    page.get_by_label("Topic").fill("chess")
    expect(page.get_by_text(title)).to_be_visible()
    # Dates: from the day after it, the event is gone; from today again, it is back.
    page.get_by_label("From", exact=True).fill((datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%d"))
    expect(page.get_by_text("No events match.")).to_be_visible()
    page.get_by_label("To", exact=True).fill((datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d"))
    page.get_by_label("From", exact=True).fill(datetime.now(UTC).strftime("%Y-%m-%d"))
    expect(page.get_by_text(title)).to_be_visible()
    page.get_by_label("To", exact=True).fill((datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%d"))
    expect(page.get_by_text("No events match.")).to_be_visible()
    page.get_by_label("To", exact=True).fill("")
    expect(page.get_by_text(title)).to_be_visible()
    # Distance: Leipzig is about 147 km from the venue, out of the 25 km radius and within 250 km.
    page.get_by_label("City").fill("Leipzig")
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("status")).to_have_text("Near Leipzig, Germany")
    expect(page.get_by_text("No events match.")).to_be_visible()
    page.locator("ion-select").click()
    page.get_by_role("radio", name="250 km").click()
    page.get_by_role("button", name="OK").click()
    expect(page.get_by_text(title)).to_be_visible()
    expect(page.get_by_role("heading", name=group["name"])).to_be_visible()
    check_accessibility(page)


def test_dates_show_both_time_zones_in_the_formats_of_the_browsers_locale(
    server: Server, new_context: NewContext
) -> None:
    """The same event, 19:00 in Berlin, seen from New York in American English (12-hour clock, month before day,
    their own time beside it) and from Berlin in German (24-hour clock, day before month, one time: the zones agree)."""
    email, _ = server.person("Dora")
    token = server.token_of(email)
    day = datetime.now(UTC).date() + timedelta(days=6)
    starts = datetime(day.year, day.month, day.day, 19, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    event_id = _event(server, token, _group(server, token)["id"], f"Lecture {time.time_ns()}", starts)
    in_new_york = starts.astimezone(ZoneInfo("America/New_York"))

    american = new_context(DESKTOP, locale="en-US", timezone_id="America/New_York").new_page()
    american.goto(f"/events/{event_id}")
    when = american.locator(".facts dd").first
    expect(when).to_contain_text(re.compile(rf"{starts:%b} {day.day}, {day.year}.*7:00\s*PM\s*(GMT\+[12]|CES?T)"))
    hour = in_new_york.hour % 12 or 12
    expect(when).to_contain_text(
        re.compile(rf"Your time: .*{in_new_york:%b} {in_new_york.day}.*{hour}:00\s*{in_new_york:%p}\s*E[SD]T")
    )

    german = new_context(PHONE, locale="de-DE", timezone_id="Europe/Berlin").new_page()
    german.goto(f"/events/{event_id}")
    when = german.locator(".facts dd").first
    expect(when).to_contain_text(re.compile(rf"\b{day.day}\. \S+ {day.year}.*19:00\s*(MEZ|MESZ)"))
    expect(when).not_to_contain_text("Your time")
    expect(when).not_to_contain_text("PM")


def test_logging_in_with_the_keyboard_alone_follows_the_order_on_screen(
    server: Server, new_context: NewContext
) -> None:
    email, name = server.person("Kim")
    page = new_context(DESKTOP).new_page()
    page.goto("/login")
    email_field, password_field = page.get_by_label("Email"), page.get_by_label("Password")
    expect(email_field).to_be_visible()
    for _ in range(20):  # reached with Tab from the top of the page
        page.keyboard.press("Tab")
        if email_field.evaluate("field => field === document.activeElement"):
            break
    expect(email_field).to_be_focused()
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    expect(password_field).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(email_field).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")  # the Log in button comes next, and Enter presses it
    page.keyboard.press("Enter")
    expect(page.locator("ion-toolbar .who")).to_have_text(name)


def test_tokens_are_refreshed_silently_when_expired_or_refused(server: Server, new_context: NewContext) -> None:
    email, name = server.person("Rafael")
    page = new_context(PHONE).new_page()
    log_in(page, email)
    expect(page.locator("ion-toolbar .who")).to_have_text(name)
    first = page.evaluate("() => localStorage.getItem('gatherly.refresh')")

    # An access token the server refuses (401): refreshed, and the request sent once more.
    page.evaluate("() => localStorage.setItem('gatherly.access', 'not-a-token')")
    page.reload()
    expect(page.locator("ion-toolbar .who")).to_have_text(name)
    second = page.evaluate("() => localStorage.getItem('gatherly.refresh')")
    assert second != first  # rotated

    # An access token about to expire: refreshed before the request leaves.
    page.evaluate("() => localStorage.setItem('gatherly.expires', '0')")
    page.reload()
    expect(page.locator("ion-toolbar .who")).to_have_text(name)
    assert page.evaluate("() => localStorage.getItem('gatherly.refresh')") not in (first, second)

    # A refresh token the server no longer accepts: logged out, not stuck.
    page.evaluate(
        "() => { localStorage.setItem('gatherly.access', 'x'); localStorage.setItem('gatherly.refresh', 'revoked'); }"
    )
    page.reload()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    assert page.evaluate("() => localStorage.getItem('gatherly.refresh')") is None


def test_joining_by_approval_answers_the_questions_and_an_organizer_approves(
    server: Server, new_context: NewContext
) -> None:
    organizer_email, _ = server.person("Petra")
    member_email, member_name = server.person("Quentin")
    group = _group(
        server, server.token_of(organizer_email), join_policy="approval", questions=["Which openings do you play?"]
    )

    member = new_context(PHONE).new_page()
    log_in(member, member_email, f"/groups/{group['id']}")
    member.get_by_label("Which openings do you play?").fill("The Sicilian")
    member.get_by_role("button", name="Ask to join").click()
    expect(member.get_by_role("status")).to_have_text("Your request to join is waiting for an organizer.")
    expect(member.get_by_role("region", name=group["name"])).to_be_visible()  # the map (loaded on demand) is in
    check_accessibility(member)

    organizer = new_context(DESKTOP).new_page()
    log_in(organizer, organizer_email, f"/groups/{group['id']}")
    request = organizer.locator("ion-item", has_text=member_name)
    expect(request).to_contain_text("Which openings do you play?: The Sicilian")
    check_accessibility(organizer)
    screenshot(organizer, "group-requests")
    request.get_by_role("button", name="Approve").click()
    expect(organizer.get_by_text("No requests waiting.")).to_be_visible()

    member.reload()
    expect(member.get_by_role("status")).to_have_text("You are a member of this group.")
    member.get_by_role("button", name="Leave this group").click()
    expect(member.get_by_role("button", name="Ask to join")).to_be_visible()


def test_hostile_text_from_others_is_shown_as_text(server: Server, new_context: NewContext) -> None:
    email, _ = server.person("Mallory")
    name = '<img src=x onerror="window.pwned=1">Evil'
    group = _group(server, server.token_of(email), name=name, description="<script>window.pwned=2</script>")
    page = new_context(DESKTOP).new_page()
    page.goto(f"/groups/{group['id']}")
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    expect(page.get_by_text("<script>window.pwned=2</script>")).to_be_visible()
    assert page.evaluate("() => window.pwned") is None
    assert page.locator("img[src=x]").count() == 0


def test_an_unknown_group_shows_the_problem(new_context: NewContext) -> None:
    page = new_context(PHONE).new_page()
    page.goto("/groups/00000000-0000-0000-0000-000000000000")
    expect(page.get_by_role("alert")).to_have_text(re.compile(r"\S"))


def test_logging_out_forgets_answers_still_queued_offline(server: Server, new_context: NewContext) -> None:
    organizer_email, _ = server.person("Ines")
    member_email, _ = server.person("Jonas")
    organizer_token, member_token = server.token_of(organizer_email), server.token_of(member_email)
    group = _group(server, organizer_token)
    event_id = _event(server, organizer_token, group["id"], f"Quiz {time.time_ns()}")
    with server.api() as client:
        joined = client.post(
            f"/api/groups/{group['id']}/join", json={}, headers={"Authorization": f"Bearer {member_token}"}
        )
        assert joined.status_code == 200

    context = new_context(PHONE)
    page = context.new_page()
    log_in(page, member_email, f"/events/{event_id}")
    expect(page.get_by_role("button", name="Going", exact=True)).to_be_visible()
    context.set_offline(True)
    page.get_by_role("button", name="Going", exact=True).click()
    expect(page.locator(".pending")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Log in", exact=True)).to_be_visible()
    assert page.evaluate("() => localStorage.getItem('gatherly.pendingRsvps')") is None
    context.set_offline(False)
    page.evaluate("() => window.dispatchEvent(new Event('online'))")
    with server.api() as client:
        event = client.get(f"/api/events/{event_id}", headers={"Authorization": f"Bearer {member_token}"}).json()
        assert event["my_rsvp"] is None and event["going_count"] == 0
