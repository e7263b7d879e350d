"""Requests the server makes to addresses people give it (push endpoints, say) go to the public internet only: never
to this machine, a private network, link-local addresses (cloud metadata at 169.254.169.254) or multicast.

A host name is checked by what it resolves to, when it is given and again at each connection: DNS can change after
the check (rebinding), so `public_socket_factory` refuses the very address a client is about to connect to."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

# Resolves a host name (or an IP literal) to its addresses; the process's one is the system's, tests put their own.
Resolver = Callable[[str, int], Awaitable[list[str]]]
# A name that takes longer than this to resolve counts as not resolving (a request is waiting on it).
RESOLVE_TIMEOUT_SECONDS = 5.0


class NotPublic(OSError):
    """The host is, or resolves to, an address the server must not reach."""


def is_public_address(address: str, *, allow_loopback: bool = False) -> bool:
    """Whether the server may connect to this IP address: a global unicast one (loopback too, when allowed)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id ("fe80::1%eth0") is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_loopback:
        return allow_loopback
    # `is_global` alone lets multicast through (224.0.0.0/4 is not "private").
    return ip.is_global and not ip.is_multicast


def ip_literal(host: str) -> str | None:
    """The host as an IP address when it is one ("[::1]" included), else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system's resolver gives for `host` (what a client would connect to)."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in found})


async def check_public_host(host: str, port: int, resolve: Resolver, *, allow_loopback: bool = False) -> None:
    """Raises NotPublic unless every address `host` resolves to is public (one private address is enough for a
    client to end up there); an IP literal is checked as it is. A name that does not resolve (in time) raises
    OSError."""
    if (literal := ip_literal(host)) is not None:
        addresses = [literal]
    else:
        addresses = await asyncio.wait_for(resolve(host, port), RESOLVE_TIMEOUT_SECONDS)
    if not addresses:
        raise NotPublic(f"{host} resolves to no address")
    for address in addresses:
        if not is_public_address(address, allow_loopback=allow_loopback):
            raise NotPublic(f"{host} is or resolves to {address}, which is not a public address")


async def check_public_endpoint(url: str, resolve: Resolver, *, allow_loopback: bool = False) -> None:
    """`check_public_host` for a URL's host and port (the scheme's default port when it names none)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        raise NotPublic(f"{url} names no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    await check_public_host(parts.hostname, port, resolve, allow_loopback=allow_loopback)


def public_socket_factory(*, allow_loopback: bool = False) -> Callable[[Any], socket.socket]:
    """A socket factory for aiohttp's TCPConnector (aiohappyeyeballs' `socket_factory`): it makes the socket only
    for a public address, so a connection never reaches another one whatever the name resolved to by then, and
    whether the URL was given or a redirect's."""

    def make(addr_info: Any) -> socket.socket:
        family, kind, proto, _, address = addr_info
        if not is_public_address(str(address[0]), allow_loopback=allow_loopback):
            raise NotPublic(f"refused to connect to {address[0]}: not a public address")
        return socket.socket(family=family, type=kind, proto=proto)

    return make
