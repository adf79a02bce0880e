"""The standalone story: a real `bastion serve` process issues tokens, and the
example resource server verifies them over HTTP against its JWKS."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest
from examples.resource_server import create_app

pytestmark = pytest.mark.anyio

BASTION = [sys.executable, "-m", "bastion.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(
        {
            "BASTION_PORT": str(port),
            "BASTION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}",
            "BASTION_SECRET_KEY_FILE": str(tmp_path / "secret"),
            "BASTION_ARGON2_MEMORY_COST": "8192",
            "BASTION_ARGON2_TIME_COST": "1",
        }
    )
    return env


@pytest.fixture
def bastion_server(server_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """`bastion db upgrade` then `bastion serve`, as `make serve` runs them."""
    subprocess.run([*BASTION, "db", "upgrade"], env=server_env, cwd=tmp_path, check=True)
    proc = subprocess.Popen(
        [*BASTION, "serve"],
        env=server_env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield f"http://127.0.0.1:{server_env['BASTION_PORT']}"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


async def _wait_until_up(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            try:
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not come up")


@pytest.fixture
async def bastion_url(bastion_server: str) -> str:
    await _wait_until_up(bastion_server)
    return bastion_server


async def test_resource_server_accepts_tokens_from_a_running_bastion(bastion_url: str) -> None:
    """A token from the real server opens the example's routes, by scope."""
    async with httpx.AsyncClient(base_url=bastion_url) as auth:
        created = await auth.post(
            "/auth/register", json={"email": "rs@example.com", "password": "resource server pw"}
        )
        assert created.status_code == 201
        issued = await auth.post(
            "/oauth/token",
            data={
                "grant_type": "password",
                "username": "rs@example.com",
                "password": "resource server pw",
            },
        )
        assert issued.status_code == 200
        token = issued.json()["access_token"]

    app = create_app(bastion_url)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://resource") as rs:
        assert (await rs.get("/public")).status_code == 200
        assert (await rs.get("/profile")).status_code == 401
        ok = await rs.get("/profile", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        assert ok.json()["subject"] == created.json()["id"]
        denied = await rs.get("/invoices", headers={"Authorization": f"Bearer {token}"})
        assert denied.status_code == 403
        assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]
        forged = await rs.get("/profile", headers={"Authorization": f"Bearer {token[:-4]}AAAA"})
        assert forged.status_code == 401


async def test_keys_rotated_by_the_cli_reach_the_resource_server(
    bastion_url: str, server_env: dict[str, str], tmp_path: Path
) -> None:
    """After `bastion keys rotate`, the JWKS lists both keys and `keys list` shows them."""
    async with httpx.AsyncClient(base_url=bastion_url) as auth:
        before = (await auth.get("/.well-known/jwks.json")).json()["keys"]
    run = partial(subprocess.run, env=server_env, cwd=tmp_path, check=True, text=True)
    await anyio.to_thread.run_sync(partial(run, [*BASTION, "keys", "rotate"]))
    listed = await anyio.to_thread.run_sync(
        partial(run, [*BASTION, "keys", "list"], capture_output=True)
    )
    listed = listed.stdout
    assert "active" in listed
    assert "published" in listed
    assert before[0]["kid"] in listed
