"""Shared fixtures: a real Bastion app over a temporary SQLite file, driven by
httpx through ASGI, with a frozen clock so time moves only when a test says."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.server.app import create_app
from bastion.settings import Settings
from bastion.stores.sql.migrate import upgrade

pytest_plugins = ["tests.secrets_in_logs"]  # the session fails if a secret reaches a log line

TEST_SECRET = SecretStr("test-secret-key-that-is-long-enough-0123456789")
ISSUER = "http://testserver"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a hermetic test server; keyword arguments override fields.

    argon2 runs with cheap parameters here: the suite tests behaviour, and the
    benchmark measures the real cost with the OWASP baseline. Rate limits and
    the failed-login lockout are off, so tests may log in freely; their own
    tests switch them on."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}",
            "secret_key": TEST_SECRET,
            "issuer": ISSUER,
            "argon2_memory_cost": 8192,
            "argon2_time_cost": 1,
            "rate_limits_enabled": False,
            "lockout_enabled": False,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def bastion(settings: Settings, clock: FrozenClock) -> AsyncIterator[Bastion]:
    await upgrade(settings.database_url)
    instance = Bastion(settings, clock=clock)
    async with instance.lifespan():
        yield instance


@pytest.fixture
async def client(bastion: Bastion) -> AsyncIterator[httpx.AsyncClient]:
    # Imported here, not at the top: pytest must import the plugin itself (above)
    # so that its asserts are rewritten.
    from tests.secrets_in_logs import EVENT_HOOKS

    app = create_app(bastion=bastion)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url=ISSUER, event_hooks=EVENT_HOOKS
    ) as http:
        yield http


PASSWORD = "correct horse battery staple"


@pytest.fixture
async def registered(client: httpx.AsyncClient) -> dict[str, str]:
    """A registered user: its email, password and id."""
    email = "alice@example.com"
    response = await client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return {"email": email, "password": PASSWORD, "id": response.json()["id"]}


@pytest.fixture
async def access_token(client: httpx.AsyncClient, registered: dict[str, str]) -> str:
    response = await client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "username": registered["email"],
            "password": registered["password"],
        },
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token
