"""Scale-out: several ``bastion serve`` processes over one PostgreSQL and one
Redis behave as one server.

Two real server processes (A and B, different ports) share a fresh
PostgreSQL database and the test Redis (rate-limit keys under a prefix of
this module's own). Everything that must be shared is: the denylist (a
logout on A is refused on B, strict mode), refresh-token rotation (one token
raced to A and B wins once, RFC 9700 §4.14), rate limits, and signing keys (a
key rotated on the command line reaches both JWKS within
``BASTION_KEY_CACHE_TTL``). A third process is killed with SIGKILL under
load to show that a write answered 201 is a committed write.

The pair is started once for the module: the checks use accounts of their
own, and the only small quota is per account (``TOKEN_ACCOUNT``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest

from bastion.stores.sql.migrate import upgrade
from tests.backends import delete_keys, postgres_database, redis_connection, redis_url
from tests.conftest import PASSWORD, TEST_SECRET
from tests.http_checks import assert_oauth_error
from tests.limit_flows import rate_limit_fields
from tests.server_processes import (
    ServerProcess,
    run_cli,
    server_env,
    servers,
    start_server,
    wait_all_up,
    wait_until_up,
)

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.redis]

ISSUER = "http://scale-out.test"
"""One issuer and audience for every instance: tokens are the cluster's, not a port's."""

KEY_CACHE_TTL = 1
ACCOUNT_QUOTA = 3
REVOCATION_CACHE_TTL = 1.0
SLACK = 2.0
"""Seconds allowed on top of a documented interval for HTTP and process scheduling."""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so the servers below can be started once for the module."""
    return "asyncio"


@dataclass
class Cluster:
    """The shared pair, how to start more instances like them, and what to clean."""

    a: ServerProcess
    b: ServerProcess
    env: dict[str, str]
    cwd: Path
    http: httpx.AsyncClient
    revoked_jtis: list[str] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)

    async def register(self, server: ServerProcess, email: str) -> httpx.Response:
        response = await self.http.post(
            f"{server.url}/auth/register", json={"email": email, "password": PASSWORD}
        )
        if response.status_code == 201:
            self.user_ids.append(response.json()["id"])
        return response

    async def login(self, server: ServerProcess, email: str) -> httpx.Response:
        return await self.http.post(
            f"{server.url}/oauth/token",
            data={"grant_type": "password", "username": email, "password": PASSWORD},
        )

    async def new_session(self, server: ServerProcess) -> dict[str, str]:
        """A new account registered and logged in through ``server``: the token answer."""
        email = f"u-{secrets.token_hex(4)}@example.com"
        assert (await self.register(server, email)).status_code == 201
        response = await self.login(server, email)
        assert response.status_code == 200, response.text
        answer: dict[str, str] = response.json()
        return answer

    async def me(self, server: ServerProcess, token: str) -> int:
        response = await self.http.get(
            f"{server.url}/me", headers={"Authorization": f"Bearer {token}"}
        )
        return response.status_code

    async def refresh(self, server: ServerProcess, refresh_token: str) -> httpx.Response:
        return await self.http.post(
            f"{server.url}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        )

    async def jwks_kids(self, server: ServerProcess) -> set[str]:
        response = await self.http.get(f"{server.url}/.well-known/jwks.json")
        assert response.status_code == 200
        return {key["kid"] for key in response.json()["keys"]}


async def poll(
    check: Callable[[], Awaitable[bool]], *, within: float, every: float = 0.05
) -> float:
    """Await ``check()`` until it is true; the seconds that took. Fails past ``within``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await check():
        if loop.time() - started > within:
            raise AssertionError(f"not true within {within} s")
        await asyncio.sleep(every)
    return loop.time() - started


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """Servers A and B over a fresh PostgreSQL database and the test Redis."""
    cwd = tmp_path_factory.mktemp("scale-out")
    prefix = f"bastion:test:{secrets.token_hex(6)}"
    async with postgres_database() as database_url, redis_connection() as redis:
        await upgrade(database_url)
        env = server_env(
            {
                "BASTION_DATABASE_URL": database_url,
                "BASTION_REDIS_URL": redis_url(),
                "BASTION_SECRET_KEY": TEST_SECRET.get_secret_value(),
                "BASTION_ISSUER": ISSUER,
                "BASTION_ARGON2_MEMORY_COST": "8192",
                "BASTION_ARGON2_TIME_COST": "1",
                "BASTION_KEY_CACHE_TTL": str(KEY_CACHE_TTL),
                "BASTION_REVOCATION_CACHE_TTL": str(REVOCATION_CACHE_TTL),
                "BASTION_RATE_LIMIT_KEY_PREFIX": prefix,
                # The one small quota, per account: no other check logs one
                # account in more than twice. Per-address quotas are out of
                # reach, since every request here comes from 127.0.0.1.
                "BASTION_RATE_LIMIT_TOKEN_ACCOUNT": f"{ACCOUNT_QUOTA}/minute",
                "BASTION_RATE_LIMIT_TOKEN_IP": "100000/minute",
                "BASTION_RATE_LIMIT_REGISTER_IP": "100000/minute",
                "BASTION_PURGE_INTERVAL": "0",
                "BASTION_LOG_LEVEL": "WARNING",
            }
        )
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=15, limits=limits) as http:
            with servers(2, env, cwd) as (a, b):
                await wait_all_up(http, [a, b])
                state = Cluster(a, b, env, cwd, http)
                try:
                    yield state
                finally:
                    await delete_keys(redis, f"{prefix}*")
                    names = [f"bastion:jti:{jti}" for jti in state.revoked_jtis]
                    names += [f"bastion:wm:{user_id}" for user_id in state.user_ids]
                    if names:
                        await redis.delete(*names)


async def test_logout_on_one_instance_is_refused_on_the_other(cluster: Cluster) -> None:
    """Strict mode across processes: a token logged out on A gets 401 on B
    within BASTION_REVOCATION_CACHE_TTL (here, even if B had just accepted it)."""
    a, b = cluster.a, cluster.b
    token = (await cluster.new_session(a))["access_token"]
    assert await cluster.me(b, token) == 200  # B has seen it, and may cache "not revoked"
    logout = await cluster.http.post(
        f"{a.url}/auth/logout", headers={"Authorization": f"Bearer {token}"}
    )
    assert logout.status_code == 204, logout.text
    cluster.revoked_jtis.append(jwt.decode(token, options={"verify_signature": False})["jti"])
    assert await cluster.me(a, token) == 401

    async def refused_on_b() -> bool:
        return await cluster.me(b, token) == 401

    await poll(refused_on_b, within=REVOCATION_CACHE_TTL + SLACK)


async def test_one_refresh_token_raced_to_both_instances_wins_once(cluster: Cluster) -> None:
    """The same refresh token sent to A and B at once: exactly one 200, every
    other answer 400 invalid_grant (rotation is atomic in PostgreSQL)."""
    refresh_token = (await cluster.new_session(cluster.a))["refresh_token"]
    targets = [cluster.a, cluster.b] * 3
    answers = await asyncio.gather(*(cluster.refresh(s, refresh_token) for s in targets))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] + [400] * (len(targets) - 1), [r.text for r in answers]
    for answer in answers:
        if answer.status_code == 400:
            assert_oauth_error(answer, 400, "invalid_grant")


async def test_rate_limit_reached_through_one_instance_holds_on_the_other(
    cluster: Cluster,
) -> None:
    """The per-account quota spent through A refuses the next login on B (and
    on A): the counters live in Redis, not in either process."""
    email = f"limited-{secrets.token_hex(4)}@example.com"
    assert (await cluster.register(cluster.a, email)).status_code == 201
    for _ in range(ACCOUNT_QUOTA):
        assert (await cluster.login(cluster.a, email)).status_code == 200
    for server in (cluster.b, cluster.a):
        refused = await cluster.login(server, email)
        assert_oauth_error(refused, 429, "invalid_request", PASSWORD)
        assert rate_limit_fields(refused)["ratelimit-policy"] == {
            "name": "token_account",
            "q": ACCOUNT_QUOTA,
            "w": 60,
        }


async def test_key_rotated_on_the_command_line_reaches_both_instances(cluster: Cluster) -> None:
    """`bastion keys rotate` shows in the JWKS of A and B within
    BASTION_KEY_CACHE_TTL; tokens signed with the old and the new key verify on both."""
    a, b = cluster.a, cluster.b
    session = await cluster.new_session(a)
    old_token = session["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    output = run_cli(cluster.env, cluster.cwd, "keys", "rotate")
    new_kid = output.split()[3]  # "new active key <kid> (<alg>)"
    assert new_kid != old_kid

    async def both_publish() -> bool:
        kids = await asyncio.gather(cluster.jwks_kids(a), cluster.jwks_kids(b))
        return all({old_kid, new_kid} <= published for published in kids)

    await poll(both_publish, within=KEY_CACHE_TTL + SLACK)

    # Each instance now signs with the new key: a refresh grant on each says so.
    first = await cluster.refresh(a, session["refresh_token"])
    assert first.status_code == 200, first.text
    second = await cluster.refresh(b, first.json()["refresh_token"])
    assert second.status_code == 200, second.text
    new_tokens = [first.json()["access_token"], second.json()["access_token"]]
    assert {jwt.get_unverified_header(t)["kid"] for t in new_tokens} == {new_kid}
    for token in [old_token, *new_tokens]:
        assert [await cluster.me(a, token), await cluster.me(b, token)] == [200, 200]


async def test_killing_an_instance_mid_load_loses_no_committed_write(cluster: Cluster) -> None:
    """SIGKILL of one instance while registrations and logins run against it and
    A: every registration that was answered 201 can log in afterwards, and
    every one whose answer was lost either exists whole or not at all."""
    victim = start_server(cluster.env, cluster.cwd)
    try:
        await wait_until_up(cluster.http, victim)
        committed: list[str] = []
        unknown: list[str] = []  # registrations whose answer the kill swallowed
        interrupted = 0  # requests to the victim that failed with the kill
        on_victim = asyncio.Event()
        victim_created = 0
        after_kill: list[str] = []
        enough_after_kill = asyncio.Event()
        stop = asyncio.Event()
        killed = False

        async def worker(server: ServerProcess, n: int) -> None:
            nonlocal victim_created, interrupted
            i = 0
            while not stop.is_set():
                i += 1
                email = f"load-{server.port}-{n}-{i}-{secrets.token_hex(2)}@example.com"
                try:
                    created = await cluster.register(server, email)
                except httpx.TransportError:
                    if server is not victim:
                        raise
                    unknown.append(email)
                    interrupted += 1
                    return  # it is gone; A carries on
                assert created.status_code == 201, created.text
                committed.append(email)
                if server is victim:
                    victim_created += 1
                    if victim_created >= 8:
                        on_victim.set()
                if killed and server is not victim:
                    after_kill.append(email)
                    if len(after_kill) >= 8:
                        enough_after_kill.set()
                try:
                    login = await cluster.login(server, email)
                except httpx.TransportError:
                    if server is not victim:
                        raise
                    interrupted += 1
                    return
                assert login.status_code == 200, login.text

        tasks = [
            asyncio.create_task(worker(server, n))
            for server in (cluster.a, victim)
            for n in range(4)
        ]
        try:
            await asyncio.wait_for(on_victim.wait(), 20)
            assert victim.kill() == -9
            killed = True
            await asyncio.wait_for(enough_after_kill.wait(), 20)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        victim.stop()

    assert interrupted == 4, "every worker on the victim ends with the kill"

    limit = asyncio.Semaphore(8)

    async def login_status(email: str) -> int:
        async with limit:
            return (await cluster.login(cluster.a, email)).status_code

    statuses = await asyncio.gather(*(login_status(email) for email in committed))
    lost = [email for email, status in zip(committed, statuses, strict=True) if status != 200]
    assert not lost, f"{len(lost)} of {len(committed)} acknowledged registrations were lost"
    for email in unknown:
        if await login_status(email) != 200:  # never committed: the address must be free
            assert (await cluster.register(cluster.a, email)).status_code == 201
    assert (await cluster.http.get(f"{cluster.a.url}/health")).status_code == 200
