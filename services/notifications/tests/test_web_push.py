"""Web Push against a local receiving endpoint that does what a push service and a browser do: checks the VAPID JWT
(RFC 8292) against the published key and decrypts the payload (RFC 8291, with http_ece) with the subscription's own
keys; a subscription the push service reports gone (410) is removed; keys are kept across restarts."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from push_service import Browser, PushService, b64url, serving, unb64url

from gatherly.app.services import ALL
from gatherly.app.testing import running_gatherly
from gatherly.kernel.errors import InvalidInput
from gatherly.kernel.testing import DB_BACKENDS, scratch_databases
from gatherly.notifications import service
from gatherly.notifications.domain import InvalidSubscription, check_subscription
from gatherly.notifications.push import HOST_RESOLVER
from gatherly.notifications.store import reading, unit_of_work

pytestmark = pytest.mark.asyncio(loop_scope="module")
# `api` is conftest.NotificationsApi: one whole Gatherly per module and database backend.


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def push_service(api: Any) -> AsyncIterator[PushService]:
    async with serving(PushService()) as service:
        service.vapid_public_key = (await api.client.get("/api/push/vapid-public-key")).json()["public_key"]
        yield service


@dataclass
class FakeDns:
    """The test's DNS: names mapped to addresses (changed by tests, as DNS changes); other names do not resolve."""

    table: dict[str, list[str]] = field(default_factory=dict)

    async def __call__(self, host: str, port: int) -> list[str]:
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def resolver(api: Any) -> AsyncIterator[FakeDns]:
    """Push endpoints' hosts are resolved here instead of by the system (no DNS in tests)."""
    fake = FakeDns({"push.example.org": ["93.184.216.34"], "metadata.example.org": ["169.254.169.254"]})
    context = api.running.process.host("notifications").context
    context.extras[HOST_RESOLVER] = fake
    yield fake


async def _until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        await asyncio.sleep(0.05)


async def _subscribe(api: Any, push_service: PushService, person: Any, name: str) -> str:
    body = push_service.subscription(name)
    response = await api.client.post("/api/push/subscriptions", json=body, headers=person.auth)
    assert response.status_code == 201, response.text
    subscription_id: str = response.json()["id"]
    return subscription_id


async def test_the_public_key_is_a_p256_point(api: Any) -> None:
    key = (await api.client.get("/api/push/vapid-public-key")).json()["public_key"]
    point = unb64url(key)
    assert len(point) == 65 and point[0] == 4


async def test_a_push_is_signed_encrypted_and_gone_subscriptions_removed(api: Any, push_service: PushService) -> None:
    olga, ann = await api.person("Olga"), await api.person("Ann")
    await _subscribe(api, push_service, ann, "ann-phone")
    await _subscribe(api, push_service, ann, "gone-ann-laptop")  # 410
    await _subscribe(api, push_service, ann, "missing-ann-tablet")  # 404
    group_id = await api.group(olga, ann, name="Choir")
    sent = await api.client.post(
        f"/api/groups/{group_id}/announcements", json={"subject": "Hello", "body": "Sing!"}, headers=olga.auth
    )
    assert sent.status_code == 202

    await _until(lambda: [p for n, p in push_service.received if p["title"] == "Choir: Hello"], "the push")
    [(name, payload)] = [(n, p) for n, p in push_service.received if p["title"] == "Choir: Hello"]
    assert name == "ann-phone"
    assert payload["body"] == "Sing!" and payload["kind"] == "group_announcement"
    assert payload["link"] == f"/groups/{group_id}"
    assert push_service.refused == []

    async def left() -> list[str]:
        async with reading(api.running.process.host("notifications").context.db) as stores:
            return [s.endpoint.rsplit("/", 1)[1] for s in await stores.push.of(ann.user_id)]

    deadline = time.monotonic() + 15
    while await left() != ["ann-phone"]:
        assert time.monotonic() < deadline, await left()
        await asyncio.sleep(0.05)


async def test_a_retry_pushes_only_to_the_subscriptions_that_did_not_take_it(
    api: Any, push_service: PushService
) -> None:
    olga, ann = await api.person("Olga"), await api.person("Ann")
    await _subscribe(api, push_service, ann, "ann-phone-2")
    await _subscribe(api, push_service, ann, "flaky-ann-tablet")
    group_id = await api.group(olga, ann, name="Band")
    sent = await api.client.post(
        f"/api/groups/{group_id}/announcements", json={"subject": "Gig", "body": "Friday"}, headers=olga.auth
    )
    assert sent.status_code == 202

    def got(name: str) -> list[dict[str, Any]]:
        return [p for n, p in push_service.received if n == name and p["title"] == "Band: Gig"]

    await _until(lambda: got("flaky-ann-tablet"), "the push to the tablet, after two failed attempts")
    assert push_service.failed["flaky-ann-tablet"] == 2

    async def recorded() -> list[Any]:
        async with reading(api.running.process.host("notifications").context.db) as stores:
            sent = await stores.deliveries.with_status("sent", 1000)
        return [d for d in sent if d.user_id == ann.user_id and d.channel == "push"]

    # The push service took it before the sender recorded it: wait for the record.
    deadline = time.monotonic() + 15
    while not (found := await recorded()):
        assert time.monotonic() < deadline, "the push send was not recorded as sent"
        await asyncio.sleep(0.05)
    [push] = found
    assert push.attempts == 2, "retried twice"
    assert len(got("ann-phone-2")) == 1, "the phone took it on the first attempt and got it only then"
    assert len(got("flaky-ann-tablet")) == 1


async def test_push_off_for_a_kind_queues_no_push(api: Any, push_service: PushService) -> None:
    olga, bob = await api.person("Olga"), await api.person("Bob")
    await _subscribe(api, push_service, bob, "bob-phone")
    put = await api.client.put(
        "/api/notifications/preferences", json={"push": {"group_announcement": False}}, headers=bob.auth
    )
    assert put.status_code == 200
    group_id = await api.group(olga, bob, name="Quiet Choir")
    await api.client.post(
        f"/api/groups/{group_id}/announcements", json={"subject": "Shh", "body": "."}, headers=olga.auth
    )
    event = await api.schedule(olga, group_id, title="Rehearsal")
    assert event["id"]
    # The event's push (still on) comes; the announcement's was never queued (sends are queued with the inbox row).
    await _until(lambda: [p for n, p in push_service.received if n == "bob-phone"], "bob's event push")
    assert [p["kind"] for n, p in push_service.received if n == "bob-phone"] == ["event_scheduled"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"endpoint": "ftp://push.example.org/x"}, "endpoint"),
        ({"endpoint": "http://push.example.org/x"}, "endpoint"),
        ({"endpoint": "https://user:pw@push.example.org/x"}, "endpoint"),
        ({"keys": {"p256dh": "AAAA", "auth": b64url(os.urandom(16))}}, "keys.p256dh"),
        ({"keys": {"p256dh": Browser().p256dh, "auth": "%%%"}}, "keys.auth"),
        ({"endpoint": "https://push.example.org/" + "x" * 3000}, "endpoint"),
        ({"keys": None}, "keys"),
        ({"endpoint": "https://[::1"}, "endpoint"),  # unclosed IPv6 bracket
        ({"endpoint": "https://push.example.org:99999/x"}, "endpoint"),  # no such port
        ({"endpoint": "https://push.example.org:abc/x"}, "endpoint"),
    ],
)
async def test_a_bad_subscription_is_refused_naming_the_field(api: Any, change: dict[str, Any], field: str) -> None:
    ann = await api.person()
    body = {
        "endpoint": "https://push.example.org/ok",
        "keys": {"p256dh": Browser().p256dh, "auth": b64url(os.urandom(16))},
    }
    refused = await api.client.post("/api/push/subscriptions", json={**body, **change}, headers=ann.auth)
    assert refused.status_code == 422, refused.text
    assert any(e["field"].startswith(field) for e in refused.json()["errors"]), refused.json()


async def test_a_subscription_is_deleted_by_its_owner_only(api: Any) -> None:
    ann, bob = await api.person("Ann"), await api.person("Bob")
    body = {
        "endpoint": "https://push.example.org/ann",
        "keys": {"p256dh": Browser().p256dh, "auth": b64url(os.urandom(16))},
    }
    subscription_id = (await api.client.post("/api/push/subscriptions", json=body, headers=ann.auth)).json()["id"]
    assert (await api.client.delete(f"/api/push/subscriptions/{subscription_id}", headers=bob.auth)).status_code == 404
    assert (await api.client.delete(f"/api/push/subscriptions/{subscription_id}", headers=ann.auth)).status_code == 204
    assert (await api.client.delete(f"/api/push/subscriptions/{subscription_id}", headers=ann.auth)).status_code == 404
    assert (await api.client.post("/api/push/subscriptions", json=body)).status_code == 401


@pytest.mark.parametrize("database_backend", DB_BACKENDS)
async def test_the_vapid_keys_are_made_once_and_kept_across_restarts(tmp_path: Path, database_backend: str) -> None:
    async with scratch_databases(database_backend, tmp_path, list(ALL)) as database_url:
        keys = []
        for _ in range(2):
            async with running_gatherly(tmp_path, database_url=database_url) as running:
                keys.append((await running.client.get("/api/push/vapid-public-key")).json()["public_key"])
    assert keys[0] == keys[1]


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://10.0.0.7/x",
        "https://172.16.5.4/x",
        "https://192.168.1.1/x",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fe80::1]/x",
        "https://[fc00::1]/x",
        "https://224.0.0.1/x",
        "https://[ff02::1]/x",
        "https://[::ffff:10.0.0.1]/x",
        "https://0.0.0.0/x",
        "https://metadata.example.org/x",  # a name resolving to the cloud metadata address
        "https://nowhere.example.org/x",  # a name that does not resolve
    ],
)
async def test_a_push_endpoint_on_a_private_network_is_refused_even_in_dev_mode(api: Any, endpoint: str) -> None:
    ann = await api.person()
    body = {"endpoint": endpoint, "keys": {"p256dh": Browser().p256dh, "auth": b64url(os.urandom(16))}}
    refused = await api.client.post("/api/push/subscriptions", json=body, headers=ann.auth)
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["endpoint"]


async def test_outside_dev_mode_a_name_resolving_to_this_machine_is_refused(api: Any, resolver: FakeDns) -> None:
    resolver.table["sneaky.example.org"] = ["93.184.216.34", "127.0.0.1"]
    ann = await api.person()
    keys = (Browser().p256dh, b64url(os.urandom(16)))
    uow = unit_of_work(api.running.process.host("notifications").context)
    me = SimpleNamespace(user_id=ann.user_id)
    with pytest.raises(InvalidInput) as refused:
        await service.subscribe_to_push(uow, me, "https://sneaky.example.org/x", *keys, dev=False, resolve=resolver)
    assert refused.value.field == "endpoint"
    # The same name with public addresses only is a push service like any other.
    resolver.table["sneaky.example.org"] = ["93.184.216.34"]
    assert await service.subscribe_to_push(uow, me, "https://sneaky.example.org/x", *keys, dev=False, resolve=resolver)


async def test_a_subscription_whose_host_now_resolves_to_a_private_address_gets_no_post_and_is_removed(
    api: Any, push_service: PushService, resolver: FakeDns
) -> None:
    olga, ann = await api.person("Olga"), await api.person("Ann")
    resolver.table["rebind.example.org"] = ["93.184.216.34"]
    keys = {"p256dh": Browser().p256dh, "auth": b64url(os.urandom(16))}
    body = {"endpoint": "https://rebind.example.org/push/ann-rebound", "keys": keys}
    assert (await api.client.post("/api/push/subscriptions", json=body, headers=ann.auth)).status_code == 201
    await _subscribe(api, push_service, ann, "ann-desk")
    # DNS changes after the subscription was accepted: the name now points into the private network.
    resolver.table["rebind.example.org"] = ["10.0.0.5"]
    group_id = await api.group(olga, ann, name="Rebinders")
    sent = await api.client.post(
        f"/api/groups/{group_id}/announcements", json={"subject": "Hi", "body": "."}, headers=olga.auth
    )
    assert sent.status_code == 202
    await _until(lambda: [n for n, p in push_service.received if p["title"] == "Rebinders: Hi"], "the other push")

    async def endpoints() -> list[str]:
        async with reading(api.running.process.host("notifications").context.db) as stores:
            return [s.endpoint for s in await stores.push.of(ann.user_id)]

    deadline = time.monotonic() + 15
    while "https://rebind.example.org/push/ann-rebound" in await endpoints():
        assert time.monotonic() < deadline, "the rebound subscription was not removed"
        await asyncio.sleep(0.05)
    assert await endpoints() == [f"{push_service.origin}/push/ann-desk"]


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://127.0.0.1/x",
        "https://localhost/x",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://10.0.0.7/x",
        "https://169.254.169.254/x",
        "https://224.0.0.1/x",
    ],
)
async def test_outside_dev_mode_a_push_endpoint_is_never_this_machine_or_a_private_network(endpoint: str) -> None:
    keys = (Browser().p256dh, b64url(os.urandom(16)))
    with pytest.raises(InvalidSubscription) as refused:
        check_subscription(endpoint, *keys, plain_http_on_loopback=False)
    assert refused.value.field == "endpoint"
    check_subscription("https://push.example.org/x", *keys, plain_http_on_loopback=False)
    if "127.0.0.1" in endpoint or "localhost" in endpoint or "[::1]" in endpoint:
        check_subscription(endpoint, *keys, plain_http_on_loopback=True)  # a local push service in dev mode
    else:
        with pytest.raises(InvalidSubscription):  # dev mode allows this machine, not a private network
            check_subscription(endpoint, *keys, plain_http_on_loopback=True)
