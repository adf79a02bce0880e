"""Housekeeping and the operator's commands: ``Bastion.purge()`` drops what can
never matter again and keeps everything live; ``bastion db purge`` does the
same from the command line; ``bastion users disable`` ends a user's sessions
and logins until ``users enable``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from bastion.clock import FrozenClock, SystemClock
from bastion.core import Bastion
from bastion.settings import Settings
from tests.conftest import PASSWORD, TEST_SECRET
from tests.http_checks import assert_oauth_error
from tests.token_flows import (
    BOB,
    BOB_PASSWORD,
    bearer,
    http_client,
    login,
    me_status,
    refresh,
    register,
    rows,
    running,
)

EMAIL = "alice@example.com"
DAY = 86_400
TIMEOUT = 60
"""Seconds one command may take."""

COUNTS = {
    "families": "SELECT count(*) FROM refresh_families",
    "tokens": "SELECT count(*) FROM refresh_tokens",
    "denied": "SELECT count(*) FROM revoked_tokens",
    "watermarks": "SELECT count(*) FROM token_watermarks",
}


async def counts(bastion: Bastion) -> dict[str, int]:
    return {name: (await rows(bastion, sql))[0][0] for name, sql in COUNTS.items()}


async def logout(client: httpx.AsyncClient, tokens: dict[str, Any], *, session: bool) -> None:
    body = {"refresh_token": tokens["refresh_token"]} if session else None
    response = await client.post("/auth/logout", headers=bearer(tokens["access_token"]), json=body)
    assert response.status_code == 204, response.text


# ------------------------------------------------------------------ Bastion.purge()


@pytest.mark.anyio
async def test_purge_drops_the_dead_and_keeps_the_live(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """Expired and revoked families (with their tokens), lapsed denylist
    entries and watermarks go; live sessions and live denials stay and still work."""
    await register(client, EMAIL)
    await register(client, BOB, BOB_PASSWORD)
    await login(client, EMAIL)  # day 0: ends on day 7 by itself
    bob = await login(client, BOB, BOB_PASSWORD)
    signed_out = await client.post("/me/sessions/revoke-all", headers=bearer(bob["access_token"]))
    assert signed_out.status_code == 200  # a revoked family and a watermark until 15.5 min

    clock.advance(6 * DAY)
    ended = await login(client, EMAIL)
    await logout(client, ended, session=True)  # a revoked family and a denial until +15 min
    live = await login(client, EMAIL)

    clock.advance(DAY + 3600)  # day 7 + 1 h: only `live` and what follows are alive
    latest = await login(client, EMAIL)
    await logout(client, latest, session=False)  # a denial that still counts

    before = await counts(bastion)
    assert before == {"families": 5, "tokens": 5, "denied": 2, "watermarks": 1}
    removed = await bastion.purge()
    assert removed == {
        "refresh_sessions": 3,
        "revocations": 2,
        "signing_keys": 0,
        "browser_sessions": 0,
        "api_keys": 0,
    }
    assert await counts(bastion) == {"families": 2, "tokens": 2, "denied": 1, "watermarks": 0}

    assert (await refresh(client, live["refresh_token"])).status_code == 200
    assert (await refresh(client, latest["refresh_token"])).status_code == 200
    assert await me_status(client, latest["access_token"]) == 401  # its denial was kept
    assert set((await bastion.purge()).values()) == {0}


@pytest.mark.anyio
async def test_purge_keeps_a_family_until_its_last_moment(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """A family is kept while it can still be used, up to its expiry."""
    await register(client, EMAIL)
    tokens = await login(client, EMAIL)
    clock.advance(3 * DAY - 1)  # just inside the idle timeout
    assert (await bastion.purge())["refresh_sessions"] == 0
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200


# ------------------------------------------------------------------ the command line


def cli_env(directory: Path) -> dict[str, str]:
    """The caller's environment without any ``BASTION_*`` variable, plus a
    database and secret in ``directory`` and cheap argon2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(
        BASTION_DATABASE_URL=f"sqlite+aiosqlite:///{directory / 'bastion.db'}",
        BASTION_SECRET_KEY=TEST_SECRET.get_secret_value(),
        BASTION_SECRET_KEY_FILE=str(directory / "secret" / "key"),
        BASTION_ARGON2_MEMORY_COST="8192",
        BASTION_ARGON2_TIME_COST="1",
    )
    return env


def start_command(directory: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bastion.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=directory,  # no stray .env, no ./bastion.db
        env=cli_env(directory),
    )


def finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def bastion_command(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return finish(start_command(directory, *args))


def settings_for(directory: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite+aiosqlite:///{directory / 'bastion.db'}",
        secret_key=TEST_SECRET,
        issuer="http://testserver",
        argon2_memory_cost=8192,
        argon2_time_cost=1,
    )


def in_process(directory: Path, work: Callable[[httpx.AsyncClient, Bastion], Any]) -> Any:
    """Run ``work`` against a Bastion on the real clock over ``directory``'s database."""

    async def main() -> Any:
        async with (
            running(settings_for(directory), SystemClock()) as bastion,
            http_client(bastion) as http,
        ):
            return await work(http, bastion)

    return anyio.run(main)


def test_db_purge_command(tmp_path: Path) -> None:
    """``bastion db purge`` removes what expired on the real clock, keeps the
    rest, and prints how many of each it removed."""

    async def seed_the_past() -> None:
        past = FrozenClock(datetime.now(UTC) - timedelta(days=10))
        async with running(settings_for(tmp_path), past) as bastion, http_client(bastion) as http:
            await register(http, EMAIL)
            old = await login(http, EMAIL)  # its family ended 3 days ago
            await logout(http, old, session=False)  # a denial that lapsed long ago

    anyio.run(seed_the_past)

    async def seed_now(http: httpx.AsyncClient, bastion: Bastion) -> dict[str, int]:
        now = await login(http, EMAIL)
        await logout(http, now, session=False)
        return await counts(bastion)

    assert in_process(tmp_path, seed_now) == {
        "families": 2,
        "tokens": 2,
        "denied": 2,
        "watermarks": 0,
    }

    result = bastion_command(tmp_path, "db", "purge")
    assert result.returncode == 0, result.stderr
    expected = (
        r"refresh_sessions: 1, revocations: 1, signing_keys: 0, browser_sessions: 0, api_keys: 0\n"
    )
    assert re.fullmatch(expected, result.stdout), result.stdout
    assert "Traceback" not in result.stderr

    async def after(http: httpx.AsyncClient, bastion: Bastion) -> dict[str, int]:
        return await counts(bastion)

    assert in_process(tmp_path, after) == {"families": 1, "tokens": 1, "denied": 1, "watermarks": 0}


def test_users_disable_and_enable_commands(tmp_path: Path) -> None:
    """``users disable`` ends every session and refuses logins; ``users enable``
    lets the user log in again, while the ended sessions stay ended."""

    async def seed(http: httpx.AsyncClient, bastion: Bastion) -> dict[str, Any]:
        user_id = await register(http, EMAIL)
        return {"id": user_id, **await login(http, EMAIL)}

    tokens = in_process(tmp_path, seed)
    # Runs alongside the rest: it only reads, and every command start costs a second.
    unknown_run = start_command(tmp_path, "users", "disable", "nobody@example.com")

    disabled = bastion_command(tmp_path, "users", "disable", EMAIL.upper())
    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout == f"disabled user {tokens['id']}\n"

    async def while_disabled(http: httpx.AsyncClient, bastion: Bastion) -> None:
        assert_oauth_error(await refresh(http, tokens["refresh_token"]), 400, "invalid_grant")
        refused = await http.post(
            "/oauth/token",
            data={"grant_type": "password", "username": EMAIL, "password": PASSWORD},
        )
        assert_oauth_error(refused, 400, "invalid_grant", PASSWORD)
        assert await me_status(http, tokens["access_token"]) == 401

    in_process(tmp_path, while_disabled)

    enabled = bastion_command(tmp_path, "users", "enable", EMAIL)
    assert enabled.returncode == 0, enabled.stderr
    assert enabled.stdout == f"enabled user {tokens['id']}\n"

    async def after_enabling(http: httpx.AsyncClient, bastion: Bastion) -> None:
        fresh = await login(http, EMAIL)
        assert await me_status(http, fresh["access_token"]) == 200
        assert_oauth_error(await refresh(http, tokens["refresh_token"]), 400, "invalid_grant")
        assert await me_status(http, tokens["access_token"]) == 401

    in_process(tmp_path, after_enabling)

    unknown = finish(unknown_run)
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert "nobody@example.com" in unknown.stderr
    assert "Traceback" not in unknown.stderr
