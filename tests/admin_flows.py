"""Steps shared by the authorization tests: accounts holding given roles,
logged in over HTTP, the claims of their tokens, and the shape of a 403."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import jwt as pyjwt

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.settings import Settings
from tests.conftest import ISSUER, PASSWORD, TEST_SECRET
from tests.http_checks import assert_problem, bearer_challenge
from tests.token_flows import bearer, http_client, login, register, running

USER_PERMISSIONS = ["email", "profile"]
EDITOR_PERMISSIONS = sorted([*USER_PERMISSIONS, "content:read", "content:write"])
ADMIN_PERMISSIONS = sorted(
    [
        *EDITOR_PERMISSIONS,
        "audit:read",
        "roles:admin",
        "sessions:admin",
        "tokens:introspect",
        "users:admin",
    ]
)
CLOSURES = {"user": ["user"], "editor": ["editor", "user"], "admin": ["admin", "editor", "user"]}
"""The ``roles`` claim each seeded role gives: the role and all it includes."""


@dataclass
class Account:
    """A registered user, logged in once."""

    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def uuid(self) -> UUID:
        return UUID(self.id)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.access_token)


def claims(token: str) -> dict[str, Any]:
    """The payload of an access token, unverified (the test trusts its server)."""
    payload: dict[str, Any] = pyjwt.decode(token, options={"verify_signature": False})
    return payload


async def account(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    email: str,
    roles: list[str] | None = None,
    password: str = PASSWORD,
) -> Account:
    """Register ``email``, give it ``roles`` (the default roles when None)
    through the service, and log in with the password grant."""
    user_id = await register(client, email, password)
    if roles is not None:
        await bastion.authz.set_user_roles(UUID(user_id), roles, actor="test")
    clock.advance(0.001)  # watermarks are inclusive: a later token must be newer
    body = await login(client, email, password)
    return Account(user_id, email, password, body["access_token"], body["refresh_token"])


async def admin_account(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock, email: str = "root@example.com"
) -> Account:
    """An account holding the seeded ``admin`` role."""
    return await account(client, bastion, clock, email, ["admin"])


async def relogin(client: httpx.AsyncClient, clock: FrozenClock, who: Account) -> Account:
    """A fresh login for ``who`` after a change of its roles."""
    clock.advance(0.001)
    body = await login(client, who.email, who.password)
    return Account(who.id, who.email, who.password, body["access_token"], body["refresh_token"])


def assert_forbidden(response: httpx.Response, *permissions: str) -> dict[str, Any]:
    """403 problem details with an RFC 6750 §3.1 ``insufficient_scope``
    challenge naming ``permissions``; returns the body."""
    body = assert_problem(response, 403)
    challenge = bearer_challenge(response)
    assert challenge["error"] == "insufficient_scope", challenge
    if permissions:
        assert challenge["scope"].split() == list(permissions), challenge
    return body


def assert_unauthorized(response: httpx.Response, *secrets: str) -> dict[str, Any]:
    """401 problem details with a ``Bearer`` challenge; returns the body."""
    body = assert_problem(response, 401, *secrets)
    bearer_challenge(response)
    return body


# ------------------------------------------------------------------ one server per module


@dataclass
class Server:
    """A Bastion shared by the read-only table tests of one module, with an admin."""

    bastion: Bastion
    client: httpx.AsyncClient
    clock: FrozenClock
    admin: Account


def shared_settings(directory: Path, database_url: str | None = None) -> Settings:
    """The conftest's hermetic settings (cheap argon2, no rate limits or
    lockout where this version has them), over ``database_url`` or a SQLite
    file in ``directory``."""
    values: dict[str, object] = {
        "database_url": database_url or f"sqlite+aiosqlite:///{directory / 'bastion.db'}",
        "secret_key": TEST_SECRET,
        "issuer": ISSUER,
        "argon2_memory_cost": 8192,
        "argon2_time_cost": 1,
    }
    for switch in ("rate_limits_enabled", "lockout_enabled"):
        if switch in Settings.model_fields:
            values[switch] = False
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@asynccontextmanager
async def shared_server(directory: Path, database_url: str | None = None) -> AsyncIterator[Server]:
    """A started Bastion with an admin, for a module-scoped fixture: the tables
    of hostile inputs that must change nothing share it instead of paying for
    a migrated database per row."""
    clock = FrozenClock()
    settings = shared_settings(directory, database_url)
    async with running(settings, clock) as bastion, http_client(bastion) as http:
        yield Server(bastion, http, clock, await admin_account(http, bastion, clock))
