"""Notifications in a real browser: the live unread badge, the inbox (infinite scroll, read, all read), the settings
and web push on this device."""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from browsing import DESKTOP, PHONE, NewContext, Server, check_accessibility, log_in, screenshot
from playwright.sync_api import expect

BERLIN = {"lat": 52.52, "lng": 13.405}
# A valid P-256 public key and auth secret, as a browser's push service would hand them out.
P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _group_with_member(server: Server, organizer: str, member: str) -> str:
    with server.api() as client:
        body = {"name": f"Cyclists {time.time_ns()}", "location": BERLIN, "city": "Berlin"}
        created = client.post("/api/groups", json=body, headers=_auth(organizer))
        assert created.status_code == 201, created.text
        group_id = str(created.json()["id"])
        assert client.post(f"/api/groups/{group_id}/join", json={}, headers=_auth(member)).status_code == 200
    return group_id


def _schedule(server: Server, token: str, group_id: str, titles: list[str]) -> list[str]:
    """Events of the group (the events service hears of the group a moment after it exists: retried)."""
    starts = datetime.now(UTC) + timedelta(days=4)
    ids = []
    with server.api() as client:
        for title in titles:
            body = {
                "group_id": group_id,
                "title": title,
                "starts_at": starts.isoformat(),
                "ends_at": (starts + timedelta(hours=1)).isoformat(),
                "timezone": "Europe/Berlin",
                "online_url": "https://meet.example.org/ride",
            }
            deadline = time.monotonic() + 20
            while True:
                response = client.post("/api/events", json=body, headers=_auth(token))
                if response.status_code == 201 or time.monotonic() > deadline:
                    assert response.status_code == 201, response.text
                    break
                time.sleep(0.2)
            ids.append(str(response.json()["id"]))
    return ids


def _inbox(server: Server, token: str) -> dict[str, Any]:
    with server.api() as client:
        response = client.get("/api/notifications", params={"limit": 100}, headers=_auth(token))
        assert response.status_code == 200
        return dict(response.json())


def test_the_badge_counts_live_and_the_inbox_scrolls_marks_read_and_opens_what_happened(
    server: Server, new_context: NewContext
) -> None:
    organizer_email, _ = server.person("Nora")
    member_email, _ = server.person("Nils")
    organizer, member = server.token_of(organizer_email), server.token_of(member_email)
    group_id = _group_with_member(server, organizer, member)

    page = new_context(PHONE).new_page()
    log_in(page, member_email)
    bell = page.get_by_role("button", name=re.compile(r"^Notifications"))
    expect(bell).to_have_accessible_name("Notifications")

    # Told live, over the stream: no reload.
    first = f"Night ride {time.time_ns()}"
    (first_id,) = _schedule(server, organizer, group_id, [first])
    expect(bell).to_have_accessible_name("Notifications, 1 unread", timeout=20_000)
    expect(page.locator("ion-badge.unread")).to_have_text("1")

    # More than a page of them: the list loads the rest as it scrolls (the API's cursor).
    _schedule(server, organizer, group_id, [f"Ride {n}" for n in range(21)])
    expect(bell).to_have_accessible_name("Notifications, 22 unread", timeout=20_000)
    bell.click()
    expect(page).to_have_url(re.compile("/notifications$"))
    items = page.locator("ion-item.notification")
    expect(items).to_have_count(20)
    expect(page.get_by_role("link", name=f"New event: {first}")).to_have_count(0)  # the oldest: not loaded yet
    items.last.scroll_into_view_if_needed()
    page.locator("ion-content").evaluate("content => content.scrollToBottom(0)")
    expect(items).to_have_count(22)
    check_accessibility(page)
    screenshot(page, "notifications")

    page.get_by_role("button", name="Mark read: New event: Ride 20").click()
    expect(bell).to_have_accessible_name("Notifications, 21 unread")
    assert _inbox(server, member)["unread_count"] == 21

    page.get_by_role("button", name="Mark all read").click()
    expect(bell).to_have_accessible_name("Notifications")
    expect(page.locator("ion-badge.unread")).to_have_count(0)
    expect(page.locator("ion-item.unread-item")).to_have_count(0)
    assert _inbox(server, member)["unread_count"] == 0

    page.get_by_role("link", name=f"New event: {first}").click()
    expect(page).to_have_url(re.compile(f"/events/{first_id}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(first)


def test_settings_are_saved_per_kind_and_channel_with_reminder_hours_and_bad_hours_are_named(
    server: Server, new_context: NewContext
) -> None:
    email, _ = server.person("Selma")
    page = new_context(DESKTOP).new_page()
    log_in(page, email, "/settings/notifications")
    digest = page.get_by_label("Weekly digest: Email")
    expect(digest).to_be_checked()
    comments = page.get_by_label("New comments on your events: Email")
    expect(comments).not_to_be_checked()  # off by default
    digest.uncheck()
    comments.check()
    page.get_by_label("Announcements: Push").uncheck()

    hours = page.get_by_label("Reminders: hours before events you go to (comma-separated)")
    hours.fill("2, 999")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("ion-input.ion-invalid .error-text")).to_contain_text(re.compile(r"672|hours", re.I))
    check_accessibility(page)

    hours.fill("24, 2")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text("Your settings are saved.")).to_be_visible()
    screenshot(page, "notification-settings")
    with server.api() as client:
        saved = client.get("/api/notifications/preferences", headers=_auth(server.token_of(email))).json()
    assert saved["email"]["weekly_digest"] is False
    assert saved["email"]["comment_posted"] is True
    assert saved["push"]["group_announcement"] is False
    assert sorted(saved["reminders"]["hours_before"]) == [2, 24]

    page.reload()
    expect(page.get_by_label("Weekly digest: Email")).not_to_be_checked()
    expect(hours).to_have_value(re.compile(r"^(2, 24|24, 2)$"))


# Debian's Chromium reaches no push service from this machine: the browser's subscribe() is replaced by one that keeps
# the key it was given and hands out a subscription as a push service would (on loopback: the server refuses endpoints
# that do not resolve to a public address, except loopback in dev mode). Everything else is the app's own path.
RECORD_SUBSCRIBE = f"""
PushManager.prototype.subscribe = async function (options) {{
  const key = new Uint8Array(options.applicationServerKey);
  window.subscribedWith = {{ userVisibleOnly: options.userVisibleOnly, key: btoa(String.fromCharCode(...key)) }};
  const endpoint = 'https://127.0.0.1:9/send/' + crypto.randomUUID();
  return {{
    endpoint,
    toJSON: () => ({{ endpoint, expirationTime: null, keys: {{ p256dh: '{P256DH}', auth: '{AUTH}' }} }}),
    unsubscribe: async () => true,
  }};
}};
"""


def test_push_is_enabled_with_the_servers_vapid_key_and_turned_off_again(
    server: Server, new_context: NewContext
) -> None:
    email, _ = server.person("Paula")
    context = new_context(DESKTOP)
    context.grant_permissions(["notifications"])
    context.add_init_script(RECORD_SUBSCRIBE)
    page = context.new_page()
    log_in(page, email, "/settings/notifications")
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    expect(page.get_by_text("Push notifications are off for this device.")).to_be_visible()

    with page.expect_response(lambda r: r.url.endswith("/api/push/subscriptions")) as posted:
        page.get_by_role("button", name="Enable push notifications").click()
    assert posted.value.status == 201
    subscription_id = posted.value.json()["id"]
    expect(page.get_by_text("Push notifications are on for this device.")).to_be_visible()
    with server.api() as client:
        vapid = client.get("/api/push/vapid-public-key").json()["public_key"]
    used = page.evaluate("() => window.subscribedWith")
    assert used["userVisibleOnly"] is True
    assert base64.b64decode(used["key"]) == base64.urlsafe_b64decode(vapid + "=" * (-len(vapid) % 4))

    # A push as the service sends it (push.py's payload), delivered by the browser: the service worker shows it.
    registrations: list[str] = []
    cdp = context.new_cdp_session(page)
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda e: registrations.extend(r["registrationId"] for r in e["registrations"] if not r["isDeleted"]),
    )
    cdp.send("ServiceWorker.enable")
    deadline = time.monotonic() + 10
    while not registrations:  # CDP events are taken in while Playwright waits
        assert time.monotonic() < deadline, "no service worker registration reported"
        page.wait_for_timeout(50)
    payload = {"id": "n1", "kind": "event_scheduled", "title": "New event: Push ride", "body": "Sat", "link": "/"}
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": server.url, "registrationId": registrations[0], "data": json.dumps(payload)},
    )
    shown = "navigator.serviceWorker.ready.then(r => r.getNotifications()).then(n => n.map(x => [x.title, x.body]))"
    deadline = time.monotonic() + 10
    while not (notifications := page.evaluate(shown)):
        assert time.monotonic() < deadline, "the pushed notification was not shown"
        page.wait_for_timeout(100)
    assert notifications == [["New event: Push ride", "Sat"]]

    with page.expect_response(lambda r: r.url.endswith(f"/api/push/subscriptions/{subscription_id}")) as removed:
        page.get_by_role("button", name="Turn push notifications off").click()
    assert removed.value.status == 204
    expect(page.get_by_text("Push notifications are off for this device.")).to_be_visible()


def test_push_blocked_by_the_browser_says_so_and_subscribes_nothing(server: Server, new_context: NewContext) -> None:
    email, _ = server.person("Boris")
    context = new_context(DESKTOP)  # notifications not granted: the browser refuses the permission
    context.add_init_script(RECORD_SUBSCRIBE)
    page = context.new_page()
    log_in(page, email, "/settings/notifications")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.url.endswith("/api/push/subscriptions") else None)
    page.get_by_role("button", name="Enable push notifications").click()
    expect(page.get_by_role("alert")).to_contain_text("Notifications are blocked")
    expect(page.get_by_text("Push notifications are off for this device.")).to_be_visible()
    assert page.evaluate("() => window.subscribedWith") is None
    assert posts == []
