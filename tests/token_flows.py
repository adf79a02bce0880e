"""Steps of the token lifecycle over HTTP, shared by the lifecycle tests:
register, log in, refresh, call with a bearer; plus a whole Bastion over
another database (PostgreSQL) or with other settings."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from bastion.clock import Clock
from bastion.core import Bastion
from bastion.server.app import create_app
from bastion.settings import Settings
from bastion.stores.sql.migrate import upgrade
from tests.backends import postgres_database
from tests.conftest import ISSUER, PASSWORD

BOB = "bob@example.com"
BOB_PASSWORD = "a long and unusual passphrase"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def register(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    """Register ``email``; returns the new user's id."""
    response = await client.post("/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    user_id: str = response.json()["id"]
    return user_id


async def login(
    client: httpx.AsyncClient,
    email: str,
    password: str = PASSWORD,
    *,
    headers: dict[str, str] | None = None,
    **form: str,
) -> dict[str, Any]:
    """A successful password grant; returns the token response body."""
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": email, "password": password, **form},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(
    client: httpx.AsyncClient,
    refresh_token: str,
    *,
    headers: dict[str, str] | None = None,
    **form: str,
) -> httpx.Response:
    """The refresh-token grant (RFC 6749 §6) with ``refresh_token``."""
    return await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, **form},
        headers=headers,
    )


async def me_status(client: httpx.AsyncClient, access_token: str) -> int:
    """The status ``GET /me`` answers ``access_token`` with."""
    return (await client.get("/me", headers=bearer(access_token))).status_code


def audit_events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    """The ``bastion.audit`` events called ``name`` captured so far."""
    events = []
    for record in caplog.records:
        if record.name == "bastion.audit":
            event = json.loads(record.getMessage())
            if event["event"] == name:
                events.append(event)
    return events


async def rows(bastion: Bastion, sql: str, **params: object) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on ``bastion``'s own database."""
    async with bastion.engine.connect() as conn:
        return [tuple(row) for row in await conn.execute(text(sql), params)]


@asynccontextmanager
async def running(settings: Settings, clock: Clock) -> AsyncIterator[Bastion]:
    """Another Bastion from ``settings`` (database migrated), started and stopped."""
    await upgrade(settings.database_url)
    instance = Bastion(settings, clock=clock)
    async with instance.lifespan():
        yield instance


@asynccontextmanager
async def http_client(bastion: Bastion) -> AsyncIterator[httpx.AsyncClient]:
    """An ASGI client for ``bastion``'s server app."""
    transport = httpx.ASGITransport(app=create_app(bastion=bastion))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
        yield http


@asynccontextmanager
async def database_url_for(
    backend: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[str]:
    """A database URL for ``backend``: the test's own SQLite file, or a fresh
    PostgreSQL database dropped afterwards."""
    if backend == "postgres":
        async with postgres_database() as url:
            yield url
    else:
        yield make_settings().database_url
