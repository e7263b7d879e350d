"""Images in a real browser: a profile picture uploaded through the presigned flow with a progress bar, then ready;
a file that is not a picture refused with the reason; a type the API does not take named at the field."""

from __future__ import annotations

import re
import time

from browsing import PHONE, NewContext, Server, check_accessibility, log_in, picture, screenshot
from playwright.sync_api import Page, expect


def throttle_uploads(page: Page, bytes_per_second: int) -> None:
    session = page.context.new_cdp_session(page)
    session.send("Network.enable")
    session.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_second},
    )


def test_a_profile_picture_uploads_with_progress_and_shows_when_ready(server: Server, new_context: NewContext) -> None:
    email, _ = server.person("Ava")
    page = new_context(PHONE).new_page()
    log_in(page, email, "/profile")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your profile")
    check_accessibility(page)

    data = picture()
    assert len(data) > 500_000
    throttle_uploads(page, 400_000)  # about 3 s for the file: the bar is seen moving
    page.get_by_label("Profile picture").set_input_files({"name": "me.png", "mimeType": "image/png", "buffer": data})
    bar = page.get_by_role("progressbar", name="Upload progress")
    expect(bar).to_be_visible()
    moving = "() => { const bar = document.querySelector('progress'); return bar?.value > 0 && bar.value < 1; }"
    page.wait_for_function(moving)
    screenshot(page, "profile-uploading")
    expect(page.get_by_role("status")).to_have_text("The picture is saved.", timeout=30_000)
    expect(bar).to_have_count(0)
    avatar = page.get_by_role("img", name="Your profile picture")
    expect(avatar).to_be_visible()
    page.wait_for_function("() => document.querySelector('img.avatar').naturalWidth > 0")  # really served
    check_accessibility(page)
    screenshot(page, "profile")

    # The profile keeps it: after a reload it comes from the users service, which hears of it through events.
    deadline = time.monotonic() + 20
    while True:
        page.reload()
        try:
            expect(page.get_by_role("img", name="Your profile picture")).to_be_visible(timeout=2_000)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_a_file_that_is_no_picture_is_refused_with_the_reason_and_a_wrong_type_is_named(
    server: Server, new_context: NewContext
) -> None:
    email, _ = server.person("Bea")
    page = new_context(PHONE).new_page()
    log_in(page, email, "/profile")
    field = page.get_by_label("Profile picture")

    field.set_input_files({"name": "fake.png", "mimeType": "image/png", "buffer": b"this is not a picture\n" * 50})
    expect(page.get_by_role("alert")).to_contain_text(re.compile(r"^The picture was refused: \S"), timeout=30_000)
    expect(page.get_by_role("img", name="Your profile picture")).to_have_count(0)

    field.set_input_files({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"})
    expect(page.get_by_role("alert")).to_contain_text(re.compile("image/jpeg|content_type|type", re.I))
    check_accessibility(page)
    with server.api() as client:
        me = client.get("/api/users/me", headers={"Authorization": f"Bearer {server.token_of(email)}"}).json()
    assert me["avatar"] is None
