"""What the edge tells services about where a request came from.

The client's IP is the socket's peer address, unless that peer is one of
``BASTION_TRUSTED_PROXIES`` (IPs or CIDRs, empty by default). Only then is
``X-Forwarded-For`` read, from the right: each proxy appends the address it
received the request from, so the right-most entry that is not itself a
trusted proxy is the client as seen by the first proxy we trust. Entries to
its left were written by the client and are never believed. An entry that is
not an IP address (garbage, a port, a name) ends the walk, and the nearest
trusted hop is used instead; a forged header from anyone else changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from fastapi import Request

from bastion.errors import ConfigurationError
from bastion.tokens.refresh import ClientContext

MAX_USER_AGENT = 512
MAX_FORWARDED_ENTRIES = 32
"""Hops read from ``X-Forwarded-For`` at most; a longer chain is cut on the left."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` is believed.

    Raises :class:`~bastion.errors.ConfigurationError` naming
    ``BASTION_TRUSTED_PROXIES`` for an entry that is not an IP or a CIDR.
    """

    def __init__(self, networks: Iterable[str] = ()) -> None:
        parsed: list[Network] = []
        problems: list[str] = []
        for entry in networks:
            try:
                parsed.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                problems.append(f"BASTION_TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR")
        if problems:
            raise ConfigurationError(problems)
        self.networks = tuple(parsed)

    def __contains__(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def client_ip(self, request: Request) -> str | None:
        """The client's address as a string, or ``None`` when the socket has none."""
        peer = request.client.host if request.client else None
        if not self.networks or peer is None:
            return peer
        address = _parse_ip(peer)
        if address is None or address not in self:
            return peer
        hops = [
            part.strip()
            for value in request.headers.getlist("x-forwarded-for")
            for part in value.split(",")
        ]
        for hop in reversed(hops[-MAX_FORWARDED_ENTRIES:]):
            forwarded = _parse_ip(hop)
            if forwarded is None:
                break  # garbage: keep the nearest trusted hop
            address = forwarded
            if address not in self:
                break
        return str(address)


def _parse_ip(value: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


NO_PROXIES = TrustedProxies()


def client_context(request: Request, proxies: TrustedProxies = NO_PROXIES) -> ClientContext:
    """User agent (truncated) and the client's address (see :class:`TrustedProxies`)."""
    user_agent = request.headers.get("user-agent")
    return ClientContext(
        user_agent=user_agent[:MAX_USER_AGENT] if user_agent else None,
        ip_address=proxies.client_ip(request),
    )
