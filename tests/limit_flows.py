"""Helpers shared by the rate-limit and lockout tests: a Bastion with limits
switched on, HTTP clients that come from a chosen address, and a wall clock
the tests move by hand.

`limits` reads ``time.time()`` itself and takes no clock, so
:func:`install_wall_clock` swaps the ``time`` module seen by its memory storage (and
by :mod:`bastion.ratelimit` and :mod:`bastion.lockout`, which compute
``Retry-After`` from it) for a :class:`WallClock`. Windows then pass without
sleeping. Only the memory storage is driven this way; Redis keeps real time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import limits.aio.storage.memory
import pytest

import bastion.lockout
import bastion.ratelimit
from bastion.core import Bastion
from bastion.server.app import create_app
from tests.conftest import ISSUER, PASSWORD


class WallClock:
    """A stand-in for the ``time`` module: ``time()`` returns :attr:`now`."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def install_wall_clock(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    """Make the limits' memory storage (and Retry-After) read a :class:`WallClock`;
    a test module's ``wall_clock`` fixture calls this."""
    clock = WallClock()
    for module in (limits.aio.storage.memory, bastion.ratelimit, bastion.lockout):
        monkeypatch.setattr(module, "time", clock)
    return clock


@asynccontextmanager
async def client_from(
    instance: Bastion, ip: str = "203.0.113.7", port: int = 40000
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose requests come from the socket address ``ip``."""
    transport = httpx.ASGITransport(app=create_app(bastion=instance), client=(ip, port))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
        yield http


async def token_request(
    instance: Bastion,
    ip: str,
    email: str,
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One password grant for ``email`` from ``ip``."""
    async with client_from(instance, ip) as http:
        return await http.post(
            "/oauth/token",
            data={"grant_type": "password", "username": email, "password": password},
            headers=headers,
        )


async def register_user(instance: Bastion, email: str, *roles: str) -> str:
    """An account made through the service (no rate limit spent); its id."""
    user = await instance.accounts.register(
        email=email, password=PASSWORD, roles=frozenset(roles or ("user",))
    )
    return str(user.id)


def rate_limit_fields(response: httpx.Response) -> dict[str, Any]:
    """``Retry-After``, ``RateLimit-Policy`` and ``RateLimit`` of a 429, parsed:
    the draft's ``"name";q=..;w=..`` and ``"name";r=..;t=..`` items."""
    fields: dict[str, Any] = {"retry_after": int(response.headers["retry-after"])}
    for header in ("ratelimit-policy", "ratelimit"):
        value = response.headers.get(header)
        if value is None:
            continue
        name, *params = value.split(";")
        assert name.startswith('"')
        assert name.endswith('"')
        fields[header] = {
            "name": name[1:-1],
            **{k: int(v) for k, v in (p.split("=") for p in params)},
        }
    return fields
