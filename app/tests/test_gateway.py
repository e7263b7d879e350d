"""The all-in-one process: prefixes reach their service, the whole-process health, OpenAPI and dev mail."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from gatherly.app.gateway import PREFIXES, security_headers, storage_origins
from gatherly.app.testing import RunningGatherly, running_gatherly
from gatherly.app.testing import test_settings as settings_in
from gatherly.kernel.mail import compose


async def test_every_service_is_ready_behind_the_gateway(gatherly: RunningGatherly) -> None:
    response = await gatherly.client.get("/readyz")
    assert response.status_code == 200
    assert set(response.json()["services"]) == set(PREFIXES)
    assert (await gatherly.client.get("/livez")).status_code == 200


async def test_the_web_app_is_served_at_the_root_and_for_client_side_routes(gatherly: RunningGatherly) -> None:
    for path in ("/", "/groups/some-slug"):
        response = await gatherly.client.get(path)
        assert response.status_code == 200
        assert "<title>Gatherly</title>" in response.text


async def test_paths_no_file_system_takes_get_the_web_app_not_a_500(gatherly: RunningGatherly) -> None:
    """A name longer than the file system allows (ENAMETOOLONG), a NUL, a lone surrogate's bytes, a way out of the
    build: each is no file of the app, so index.html answers (found by driving gatherly up from outside: a 500)."""
    for path in (
        "/" + "a" * 300,
        "/assets/" + "b" * 5000 + ".js",
        "/%00",
        "/assets/x%00.js",
        "/%ed%b0%80",
        "/%ff%fe",
        "/assets/..%2f..%2f..%2fpyproject.toml",
        "/%2e%2e/%2e%2e/pyproject.toml",
    ):
        response = await gatherly.client.get(path)
        assert response.status_code == 200, (path[:40], response.status_code)
        assert "<title>Gatherly</title>" in response.text


async def test_unknown_api_paths_are_problems_not_the_web_app(gatherly: RunningGatherly) -> None:
    response = await gatherly.client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_long_path_is_refused_everywhere_under_the_api_without_being_echoed(gatherly: RunningGatherly) -> None:
    """An outsider's probe: a 20 KB id came back whole in a 404 (a group's, and the gateway's "No API at")."""
    for prefix in ("/api/nothing-here/", "/api/groups/", "/api/events/", "/api/users/", "/media/"):
        response = await gatherly.client.get(prefix + "a" * 20_000)
        assert response.status_code == 414, (prefix, response.status_code)
        assert response.headers["content-type"] == "application/problem+json"
        assert len(response.content) < 200


async def test_no_answer_redirects_to_the_host_header(gatherly: RunningGatherly) -> None:
    """An outsider's probe: /api/groups/ was a 307 to http://evil.example/api/groups when sent with that Host."""
    for path in ("/api/groups/", "/api/events/?from=x", "/api/users/me/", "/.well-known/jwks.json/", "/livez/"):
        response = await gatherly.client.get(path, headers={"Host": "evil.example"})
        assert "location" not in response.headers, (path, response.headers["location"])
        assert "evil" not in response.text, path


async def test_a_prefix_belongs_to_its_service(gatherly: RunningGatherly) -> None:
    by_prefix = {prefix: name for name, prefixes in PREFIXES.items() for prefix in prefixes}
    for host in gatherly.process.hosts:
        for route in host.app.routes:
            path = getattr(route, "path", "")
            if path.startswith(("/api/", "/.well-known", "/media")):
                owner = next(n for prefix, n in by_prefix.items() if path == prefix or path.startswith(prefix + "/"))
                assert owner == host.name, f"{path} is served by {host.name} but its prefix belongs to {owner}"


async def test_the_merged_openapi_document_covers_every_service(gatherly: RunningGatherly) -> None:
    response = await gatherly.client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    for host in gatherly.process.hosts:
        for path in host.app.openapi().get("paths", {}):
            assert path in document["paths"]


async def test_the_dev_mailbox_lists_messages_with_clickable_links(gatherly: RunningGatherly) -> None:
    await gatherly.process.platform.mailer.send(
        compose(
            sender="g@g.local",
            to="ann@example.org",
            subject="Confirm please",
            text="Open http://localhost:8000/confirm?token=xyz to confirm.",
        )
    )
    inbox = await gatherly.client.get("/dev/mail")
    assert "Confirm please" in inbox.text
    name = next(path.name for path in gatherly.mail_dir.glob("*.eml"))
    message = await gatherly.client.get(f"/dev/mail/{name}")
    assert '<a href="http://localhost:8000/confirm?token=xyz">' in message.text
    for escape in ("/dev/mail/..%2F..%2Fetc%2Fpasswd", "/dev/mail/passwd.eml", "/..%2F..%2Fetc%2Fpasswd"):
        response = await gatherly.client.get(escape)
        assert "root:" not in response.text


async def test_metrics_cover_the_whole_process(gatherly: RunningGatherly) -> None:
    await gatherly.client.get("/readyz")
    response = await gatherly.client.get("/metrics")
    assert response.status_code == 200
    assert "gatherly_outbox_relayed_total" in response.text


async def test_metrics_report_each_services_loop_lag_and_outbox(gatherly: RunningGatherly) -> None:
    # Values are process-wide, and earlier tests' services had the same names: wait for this process's relays
    # to lead (the gauge is 0 once a relay stops) and its probes to report.
    names = [host.name for host in gatherly.process.hosts]
    wanted = [f'gatherly_outbox_relay_leader{{service="{name}"}} 1.0' for name in names] + [
        f'{metric}{{service="{name}"}}'
        for name in names
        for metric in (
            "gatherly_event_loop_lag_seconds",
            "gatherly_event_loop_lag_max_seconds",
            "gatherly_outbox_backlog",
            "gatherly_outbox_oldest_age_seconds",
        )
    ]
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        text = (await gatherly.client.get("/metrics")).text
        missing = [line for line in wanted if line not in text]
        if not missing or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert missing == []


async def test_the_landing_page_runs_no_inline_script_its_own_csp_would_block(gatherly: RunningGatherly) -> None:
    # The built web app when web/dist exists (make web), else the placeholder: either runs under the CSP.
    page = await gatherly.client.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    scripts = re.findall(r"<script\b[^>]*>", page.text)
    assert scripts and all(" src=" in tag for tag in scripts), scripts
    for source in (re.search(r'src="([^"]+)"', tag)[1] for tag in scripts):  # type: ignore[index]
        script = await gatherly.client.get(source)
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]


async def test_the_web_app_gets_its_map_settings_and_the_tiles_origin_joins_the_csp(tmp_path: Path) -> None:
    tiles = "https://{s}.tiles.example.org/{z}/{x}/{y}.png"
    async with running_gatherly(tmp_path, ["users"], map_tiles_url=tiles, map_attribution="© Example") as running:
        response = await running.client.get("/config.json")
        assert response.json() == {"map_tiles_url": tiles, "map_attribution": "© Example"}
        assert response.headers["cache-control"] == "no-cache"
    csp = dict(security_headers(tiles))[b"content-security-policy"].decode()
    assert "img-src 'self' data: blob: https://*.tiles.example.org;" in csp
    plain = dict(security_headers(""))[b"content-security-policy"].decode()
    assert "img-src 'self' data: blob:;" in plain
    # Only an http(s) origin joins: a hostile setting cannot widen the policy with other sources.
    for hostile_url in ("javascript:alert(1)", "https://a.example; script-src *"):
        hostile = dict(security_headers(hostile_url))[b"content-security-policy"].decode()
        assert "img-src 'self' data: blob:;" in hostile and "script-src *" not in hostile


def test_an_s3_storage_joins_the_csp_for_uploads_and_variants_and_local_storage_adds_nothing(tmp_path: Path) -> None:
    s3 = settings_in(
        tmp_path,
        storage_backend="s3",
        s3_endpoint_url="https://s3.example.org:9000",
        s3_public_url="https://cdn.example.org",
    )
    csp = dict(security_headers("", storage_origins(s3)))[b"content-security-policy"].decode()
    assert "img-src 'self' data: blob: https://s3.example.org:9000 https://cdn.example.org;" in csp
    assert "connect-src 'self' https://s3.example.org:9000 https://cdn.example.org;" in csp
    aws = settings_in(tmp_path, storage_backend="s3", s3_bucket="pics", s3_region="eu-west-1")
    aws_csp = dict(security_headers("", storage_origins(aws)))[b"content-security-policy"].decode()
    assert "connect-src 'self' https://pics.s3.amazonaws.com https://pics.s3.eu-west-1.amazonaws.com;" in aws_csp
    assert storage_origins(settings_in(tmp_path)) == []
    hostile = settings_in(tmp_path, storage_backend="s3", s3_endpoint_url="https://a.example; script-src *")
    assert (
        "script-src *" not in dict(security_headers("", storage_origins(hostile)))[b"content-security-policy"].decode()
    )


async def test_one_loop_lag_probe_measures_the_process_for_every_service(gatherly: RunningGatherly) -> None:
    # The services of a process share its loop: a probe each would measure it over and over (each waking it 20
    # times a second). One probe, exported under every service's name (see the metrics test above).
    probes = [task.get_name() for task in asyncio.all_tasks() if "loop lag probe" in task.get_name()]
    assert probes == ["process: loop lag probe"]
