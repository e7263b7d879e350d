"""Requests to addresses people give go to the public internet only: addresses judged, host names judged by what they
resolve to (one bad address is enough), and the socket factory refusing the very address a client connects to."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from gatherly.kernel.egress import (
    NotPublic,
    Resolver,
    check_public_endpoint,
    check_public_host,
    is_public_address,
)
from gatherly.kernel.egress import public_socket_factory as factory


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.0.0.7",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",  # multicast: "global" to the ipaddress module
        "239.255.255.250",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:10.0.0.1",
        "::",
    ],
)
def test_no_address_of_this_machine_a_private_network_link_local_or_multicast_is_public(address: str) -> None:
    assert not is_public_address(address)


def test_global_unicast_addresses_are_public_and_loopback_only_when_allowed() -> None:
    assert is_public_address("93.184.216.34")
    assert is_public_address("2606:4700::6810:85e5")
    assert is_public_address("127.0.0.1", allow_loopback=True)
    assert is_public_address("::1", allow_loopback=True)
    assert not is_public_address("10.0.0.7", allow_loopback=True), "loopback only, not every private address"
    assert not is_public_address("169.254.169.254", allow_loopback=True)


def _resolver(table: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


RESOLVE = _resolver(
    {
        "push.example.org": ["93.184.216.34", "2606:4700::6810:85e5"],
        "loopback.example.org": ["127.0.0.1"],
        "metadata.example.org": ["169.254.169.254"],
        "split.example.org": ["93.184.216.34", "10.0.0.7"],  # one public, one private answer
        "empty.example.org": [],
    }
)


async def test_a_host_is_public_when_every_address_it_resolves_to_is() -> None:
    await check_public_host("push.example.org", 443, RESOLVE)
    await check_public_endpoint("https://push.example.org/send/1", RESOLVE)


@pytest.mark.parametrize(
    "url",
    [
        "https://loopback.example.org/x",
        "https://metadata.example.org/x",
        "https://split.example.org/x",
        "https://empty.example.org/x",
        "https://127.0.0.1/x",
        "https://[::1]:8443/x",
        "https://[::ffff:169.254.169.254]/x",
        "https://10.1.2.3/x",
        "https://224.0.0.1/x",
    ],
)
async def test_a_host_that_is_or_resolves_to_a_non_public_address_is_refused(url: str) -> None:
    with pytest.raises(NotPublic):
        await check_public_endpoint(url, RESOLVE)


async def test_a_name_resolving_to_loopback_is_allowed_only_when_loopback_is() -> None:
    await check_public_endpoint("https://loopback.example.org/x", RESOLVE, allow_loopback=True)
    with pytest.raises(NotPublic):
        await check_public_endpoint("https://metadata.example.org/x", RESOLVE, allow_loopback=True)


async def test_a_name_that_does_not_resolve_is_an_os_error_not_a_pass() -> None:
    with pytest.raises(OSError) as failed:
        await check_public_endpoint("https://nowhere.example.org/x", RESOLVE)
    assert not isinstance(failed.value, NotPublic)


@pytest_asyncio.fixture
async def local_server() -> AsyncIterator[int]:
    """An HTTP server on loopback: what a request rebound to this machine would reach."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="internal")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield int(port)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_the_socket_factory_refuses_to_connect_to_loopback_whatever_the_url_named(
    local_server: int, host: str
) -> None:
    # "localhost" is a name the system resolves to loopback: the check is on the address connected to.
    connector = aiohttp.TCPConnector(socket_factory=factory())
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await session.get(f"http://{host}:{local_server}/")
    error = refused.value.os_error
    # A name with several addresses (localhost: ::1 and 127.0.0.1) fails with one OSError naming each refusal.
    reasons = str(error).removeprefix("Multiple exceptions: ").split(", ")
    assert isinstance(error, NotPublic) or all(reason.endswith("not a public address") for reason in reasons), error


async def test_the_socket_factory_connects_to_loopback_when_allowed(local_server: int) -> None:
    connector = aiohttp.TCPConnector(socket_factory=factory(allow_loopback=True))
    async with aiohttp.ClientSession(connector=connector) as session:
        response = await session.get(f"http://127.0.0.1:{local_server}/")
        assert await response.text() == "internal"
