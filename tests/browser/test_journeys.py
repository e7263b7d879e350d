"""The web app's journeys in a real browser: accounts, an organizer's group and event, a member finding, joining and
answering it on the map, the waitlist, an RSVP made offline, and the shell without a network."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from browsing import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PASSWORD,
    PHONE,
    RESET_LINK,
    NewContext,
    Server,
    check_accessibility,
    log_in,
    screenshot,
)
from playwright.sync_api import Page, Playwright, expect

# Installing the service worker precaches the whole build (about 3 MB): on a saturated machine it takes longer than
# the 15 s an expectation waits.
SERVICE_WORKER_MS = 60_000
CHANGE_EMAIL_LINK = re.compile(r"/confirm-email\?token=([^\s\"'<>]+)")


def retry(action: Callable[[], object], done: Callable[[], None], seconds: float = 20) -> None:
    """Do `action` until `done` holds: for what waits on events between services (eventual consistency)."""
    deadline = time.monotonic() + seconds
    while True:
        action()
        try:
            done()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_sign_up_confirm_log_in_and_reset_a_password(server: Server, new_context: NewContext) -> None:
    for viewport in (PHONE, DESKTOP):
        page = new_context(viewport).new_page()
        email = f"newcomer-{time.time_ns()}@example.org"
        page.goto("/signup")
        page.get_by_label("Your name").fill("Newcomer")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill("short")
        page.get_by_role("button", name="Sign up").last.click()
        # The problem's field error, next to the field it concerns.
        expect(page.locator("ion-input", has=page.get_by_label("Password")).locator(".error-text")).to_contain_text(
            re.compile("characters|short|least", re.I)
        )
        check_accessibility(page)
        screenshot(page, "signup")

        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign up").last.click()
        expect(page.get_by_role("status")).to_contain_text("we sent you an email")

        page.goto(f"/confirm?token={server.wait_for_token(email)}")
        expect(page.get_by_role("status")).to_contain_text("Your email is confirmed")
        check_accessibility(page)

        page.goto("/login")
        check_accessibility(page)
        screenshot(page, "login")
        log_in(page, email)
        expect(page.locator("ion-toolbar .who")).to_have_text("Newcomer")
        check_accessibility(page)
        screenshot(page, "explore-empty")

        page.get_by_role("button", name="Log out").click()
        page.goto("/forgot-password")
        page.get_by_label("Email").fill(email)
        page.get_by_role("button", name="Send me a link").click()
        expect(page.get_by_role("status")).to_contain_text("we sent it a link")
        token = server.wait_for_token(email, RESET_LINK)
        page.goto(f"/reset-password?token={token}")
        page.get_by_label("New password").fill(PASSWORD + " changed")
        page.get_by_role("button", name="Save the new password").click()
        expect(page.get_by_role("status")).to_contain_text("Your password is changed")
        with server.api() as client:
            response = client.post("/api/auth/login", json={"email": email, "password": PASSWORD + " changed"})
            assert response.status_code == 200


def test_a_bad_confirmation_link_says_why(new_context: NewContext) -> None:
    page = new_context().new_page()
    page.goto("/confirm?token=not-a-real-token")
    expect(page.get_by_role("alert")).not_to_be_empty()
    expect(page.get_by_role("status")).to_have_count(0)


def test_the_link_mailed_to_a_new_address_confirms_the_change(server: Server, new_context: NewContext) -> None:
    email, _ = server.person("Mover")
    moved = f"moved-{time.time_ns()}@example.org"
    with server.api() as client:
        token = server.token_of(email)
        body = {"new_email": moved, "password": PASSWORD}
        response = client.post("/api/users/me/email", json=body, headers={"authorization": f"Bearer {token}"})
        assert response.status_code == 202, response.text
    page = new_context().new_page()

    page.goto(f"/confirm-email?token={server.wait_for_token(moved, CHANGE_EMAIL_LINK)}")

    expect(page.get_by_role("status")).to_contain_text("Your new email address is confirmed")
    check_accessibility(page)
    log_in(page, moved)
    expect(page.locator("ion-toolbar .who")).to_have_text("Mover")


def _create_group_and_event(page: Page, group: str, event: str, capacity: int) -> str:
    page.goto("/groups/new")
    page.get_by_label("Name").fill(group)
    page.get_by_label("Description").fill("Walks along the river, every week.")
    page.get_by_label("Topics (comma-separated)").fill("hiking, outdoors")
    page.get_by_label("City").fill("Berlin")
    page.get_by_role("region", name="Where the group meets: tap the map").click()
    expect(page.locator(".pin-picked")).to_have_count(1)
    check_accessibility(page)
    screenshot(page, "new-group")
    page.get_by_role("button", name="Create the group").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(group)
    expect(page.get_by_role("status")).to_contain_text("You are an organizer")
    screenshot(page, "group-organizer")

    page.get_by_role("button", name="Schedule an event").click()
    starts = datetime.now(UTC) + timedelta(days=3)
    page.get_by_label("Title").fill(event)
    page.get_by_label("Starts").fill(starts.strftime("%Y-%m-%dT19:00"))
    page.get_by_label("Ends").fill(starts.strftime("%Y-%m-%dT21:00"))
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_label("Venue name").fill("Riverside café")
    # Away from the group's pin (the centre), so each pin can be clicked on its own.
    venue_map = page.get_by_role("region", name="Where: tap the map to place the venue")
    box = venue_map.bounding_box()
    assert box
    venue_map.click(position={"x": box["width"] / 2 + 40, "y": box["height"] / 2 + 30})
    page.get_by_label("Seats (empty: unlimited)").fill(str(capacity))
    check_accessibility(page)
    screenshot(page, "new-event")
    # The events service learns of the new group through its events, a moment after the group exists: until then
    # the page shows the problem and the organizer tries again.
    retry(
        lambda: page.get_by_role("button", name="Schedule the event").click(),
        lambda: expect(page).to_have_url(re.compile(r"/events/[0-9a-f-]+$"), timeout=2_000),
    )
    expect(page.get_by_role("heading", level=1)).to_have_text(event)
    # Typed as 19:00 in Berlin; the person's browser is in London: both times shown, the difference plain.
    when = page.locator(".facts dd").first
    expect(when).to_contain_text(re.compile(r"19:00\s*(CET|CEST|GMT\+[12])"))
    expect(when).to_contain_text(re.compile(r"Your time: .*18:00\s*(GMT|BST)"))
    return page.url.rsplit("/", 1)[1]


def _join(page: Page, group_name: str) -> None:
    page.get_by_role("link", name=group_name).click()
    page.get_by_role("button", name="Join this group").click()
    expect(page.get_by_role("status")).to_contain_text("You are a member")
    page.go_back()


def _answer(page: Page, answer: str, expected: str | re.Pattern[str]) -> None:
    retry(
        lambda: page.get_by_role("button", name=answer, exact=True).click(),
        lambda: expect(page.locator(".rsvp-status")).to_have_text(expected, timeout=2_000),
    )


def test_organizer_schedules_member_finds_it_on_the_map_joins_and_rsvps_waitlisted_is_promoted(
    server: Server, new_context: NewContext
) -> None:
    organizer_email, _ = server.person("Olga")
    member_email, _ = server.person("Milan")
    waiting_email, _ = server.person("Wanda")
    group, event = f"River walkers {time.time_ns()}", f"Evening walk {time.time_ns()}"

    organizer = new_context(DESKTOP).new_page()
    log_in(organizer, organizer_email)
    event_id = _create_group_and_event(organizer, group, event, capacity=1)
    check_accessibility(organizer)
    screenshot(organizer, "event-organizer")

    # The member, on a phone, finds the event near them on the map.
    member = new_context(PHONE).new_page()
    log_in(member, member_email)
    member.get_by_role("button", name="Use my location").click()
    expect(member.get_by_role("status")).to_contain_text("Near your location")
    pin = member.locator(f'.leaflet-marker-icon[title="{event}"]')
    retry(lambda: member.reload(), lambda: expect(pin).to_be_visible(timeout=3_000))  # search index: eventual
    expect(member.get_by_role("heading", name="Events")).to_be_visible()
    expect(member.get_by_text(event)).to_be_visible()  # the list too
    check_accessibility(member)
    screenshot(member, "explore")
    pin.click()
    expect(member).to_have_url(re.compile(f"/events/{event_id}$"))
    expect(member.get_by_role("heading", level=1)).to_have_text(event)

    _join(member, group)
    _answer(member, "Going", "You are going.")
    expect(member.get_by_text("1 of 1 seats taken")).to_be_visible()
    # Add to calendar: the event's .ics; the personal feed link, which lists what the member goes to.
    ics = member.get_by_role("link", name="Add to calendar (.ics)").get_attribute("href")
    member.get_by_role("button", name="My calendar feed link").click()
    feed = member.locator("section[aria-labelledby=calendar] code").inner_text()
    with server.api() as client:
        assert ics
        for url in (ics, feed):
            calendar = client.get(url)
            assert calendar.status_code == 200 and calendar.headers["content-type"].startswith("text/calendar")
            assert "BEGIN:VEVENT" in calendar.text and f"SUMMARY:{event}" in calendar.text
    check_accessibility(member)
    screenshot(member, "event")

    # The organizer, in their own browser, announces something to the group; the member, on their inbox, sees it
    # arrive live (over the stream, no reload) and the unread badge count it.
    member.get_by_role("button", name=re.compile(r"^Notifications")).click()
    expect(member).to_have_url(re.compile("/notifications$"))
    member.evaluate("() => { window.notReloaded = true; }")
    subject = f"Bring a torch {time.time_ns()}"
    organizer.get_by_role("link", name=group).click()
    organizer.get_by_label("Subject").fill(subject)
    organizer.get_by_label("Message").fill("The path by the river is dark after seven.")
    organizer.get_by_role("button", name="Send to all members").click()
    expect(organizer.get_by_text("The announcement is on its way to the members.")).to_be_visible()
    announcement = member.locator("ion-item.unread-item", has_text=subject)
    expect(announcement).to_be_visible(timeout=20_000)
    expect(member.get_by_role("button", name=re.compile(r"^Notifications, [1-9][0-9]* unread$"))).to_be_visible()
    assert member.evaluate("() => window.notReloaded") is True
    check_accessibility(member)
    screenshot(member, "notifications-live")
    member.go_back()
    expect(member.get_by_role("heading", level=1)).to_have_text(event)

    # Someone else asks for the same seat: waitlisted, position 1.
    waiting = new_context(DESKTOP).new_page()
    log_in(waiting, waiting_email, f"/events/{event_id}")
    _join(waiting, group)
    _answer(waiting, "Going", "You are on the waitlist, position 1.")
    screenshot(waiting, "event-waitlisted")

    # The member gives up the seat; the waiting person's page shows the promotion by itself.
    _answer(member, "Not going", "You are not going.")
    expect(waiting.locator(".rsvp-status")).to_have_text("You are going.", timeout=20_000)

    # The group page as a member sees it.
    waiting.get_by_role("link", name=group).click()
    expect(waiting.get_by_role("heading", name="Members")).to_be_visible()
    check_accessibility(waiting)
    screenshot(waiting, "group")


def test_an_rsvp_made_offline_is_pending_then_sent_and_seen_pages_read_offline(
    server: Server, new_context: NewContext
) -> None:
    organizer_email, _ = server.person("Oscar")
    member_email, _ = server.person("Mina")
    group, event = f"Board gamers {time.time_ns()}", f"Game night {time.time_ns()}"
    organizer = new_context(DESKTOP).new_page()
    log_in(organizer, organizer_email)
    event_id = _create_group_and_event(organizer, group, event, capacity=10)

    context = new_context(PHONE)
    member = context.new_page()
    log_in(member, member_email)
    # Installing the service worker precaches the shell first: only then are API answers kept for offline use.
    member.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=SERVICE_WORKER_MS)
    member.goto(f"/events/{event_id}")
    expect(member.get_by_role("heading", level=1)).to_have_text(event)
    _join(member, group)

    context.set_offline(True)
    member.get_by_role("button", name="Going", exact=True).click()
    expect(member.locator(".pending")).to_have_text(re.compile("Pending"))
    check_accessibility(member)
    screenshot(member, "event-offline-pending")
    with server.api() as client:  # nothing reached the server
        token = server.token_of(member_email)
        mine = client.get(f"/api/events/{event_id}", headers={"Authorization": f"Bearer {token}"}).json()["my_rsvp"]
        assert mine is None

    # Pages seen recently read offline, in a new tab too (the shell and the API answers come from the cache).
    again = context.new_page()
    again.goto(f"/events/{event_id}")
    expect(again.get_by_role("heading", level=1)).to_have_text(event)
    expect(again.locator(".banner")).to_contain_text("You are offline")
    group_path = again.get_by_role("link", name=group).get_attribute("href")
    assert group_path
    again.goto(group_path)
    expect(again.get_by_role("heading", level=1)).to_have_text(group)
    expect(again.get_by_text(event)).to_be_visible()  # its events, as last read
    expect(again.locator(".banner")).to_contain_text("You are offline")
    again.close()

    context.set_offline(False)
    expect(member.locator(".rsvp-status")).to_have_text("You are going.")
    expect(member.locator(".pending")).to_have_count(0)
    with server.api() as client:
        mine = client.get(f"/api/events/{event_id}", headers={"Authorization": f"Bearer {token}"}).json()["my_rsvp"]
        assert mine["status"] == "going"


def test_the_shell_loads_with_the_network_off(new_context: NewContext) -> None:
    context = new_context(PHONE)
    page = context.new_page()
    page.goto("/")
    page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=SERVICE_WORKER_MS)
    context.set_offline(True)
    for path in ("/", "/login", "/groups/never-seen"):
        page.goto(path)
        expect(page.get_by_role("banner").or_(page.locator("ion-header"))).to_be_visible()
        expect(page.get_by_role("heading", level=1)).to_be_visible()
    expect(page.locator(".banner")).to_contain_text("You are offline")


def test_the_app_is_installable(server: Server, playwright: Playwright, tmp_path: Path) -> None:
    """Lighthouse's installability criteria: a secure context, a manifest with name, icons of 192 and 512 px (and a
    maskable one), standalone display, a start URL in scope, and a service worker controlling the start URL. In a
    browser profile of its own: Chromium offers no installation in an incognito context, which new_context() makes."""
    context = playwright.chromium.launch_persistent_context(
        tmp_path / "profile", executable_path=CHROMIUM, args=CHROMIUM_ARGS, base_url=server.url, viewport=DESKTOP
    )
    try:
        _check_installable(server, context.new_page())
    finally:
        context.close()


def _check_installable(server: Server, page: Page) -> None:
    page.goto("/")
    page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=SERVICE_WORKER_MS)
    assert page.evaluate("window.isSecureContext")
    href = page.locator('link[rel="manifest"]').get_attribute("href")
    assert href
    with server.api() as client:
        response = client.get("/" + href.lstrip("/"))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/manifest+json")
        manifest = response.json()
        assert manifest["name"] and manifest["short_name"]
        assert manifest["display"] == "standalone"
        assert manifest["start_url"].startswith(manifest.get("scope", "/"))
        assert re.fullmatch(r"#[0-9a-f]{6}", manifest["theme_color"])
        sizes = {(icon["sizes"], icon.get("purpose", "any")) for icon in manifest["icons"]}
        assert {("192x192", "any"), ("512x512", "any"), ("512x512", "maskable")} <= sizes
        for icon in manifest["icons"]:
            image = client.get(icon["src"])
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            width, height = int.from_bytes(image.content[16:20]), int.from_bytes(image.content[20:24])
            assert f"{width}x{height}" == icon["sizes"]
        csp = response.headers["content-security-policy"]
        assert "script-src 'self';" in csp  # the strict policy holds for the built app
    assert page.locator('meta[name="theme-color"]').get_attribute("content") == manifest["theme_color"]
    scope = page.evaluate("navigator.serviceWorker.getRegistration().then(r => r && r.scope)")
    assert scope == server.url + "/"

    # Chromium's own verdicts, as Lighthouse reads them: the manifest it parsed has no error, and its installability
    # check (manifest, icons, service worker with a fetch handler controlling the start URL) finds nothing missing.
    cdp = page.context.new_cdp_session(page)
    parsed = cdp.send("Page.getAppManifest")
    assert parsed["url"] == server.url + "/" + href.lstrip("/")
    assert parsed["errors"] == [], parsed["errors"]
    errors = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
    assert errors == [], errors
