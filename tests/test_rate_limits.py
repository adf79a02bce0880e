"""Rate limits (bastion.ratelimit): the token endpoint per client address and
per account, registration per address, password change per account; 429 with
``Retry-After``, ``RateLimit-Policy`` and ``RateLimit``; client addresses from
the socket unless a trusted proxy forwarded the request; limits shared through
Redis, by two instances and by two server processes; and a Redis outage
refusing with 503 instead of letting requests through."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.errors import ConfigurationError, RateLimited
from bastion.ratelimit import RateLimiter, account_key, ip_key
from bastion.server.context import TrustedProxies
from bastion.settings import Settings
from tests.backends import delete_keys, redis_connection, redis_url
from tests.conftest import PASSWORD, TEST_SECRET
from tests.http_checks import assert_oauth_error, assert_problem
from tests.limit_flows import (
    WallClock,
    client_from,
    install_wall_clock,
    rate_limit_fields,
    register_user,
    token_request,
)
from tests.server_processes import ServerProcess, run_cli, server_env, servers, wait_all_up
from tests.token_flows import bearer, running

pytestmark = pytest.mark.anyio

ALICE = "alice@example.com"
Start = Callable[..., AbstractAsyncContextManager[Bastion]]


@pytest.fixture
def wall_clock(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    return install_wall_clock(monkeypatch)


@pytest.fixture
def start(make_settings: Callable[..., Settings], clock: FrozenClock) -> Start:
    """A started Bastion with rate limits on (lockout off) and ``overrides``."""

    @asynccontextmanager
    async def start(**overrides: object) -> AsyncIterator[Bastion]:
        settings = make_settings(**{"rate_limits_enabled": True, **overrides})
        async with running(settings, clock) as instance:
            yield instance

    return start


async def spent_refresh(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> int:
    """A token request that costs no password hash (an unknown refresh token)."""
    response = await http.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": "brt_unknown"},
        headers=headers,
    )
    return response.status_code


# ------------------------------------------------------------ token endpoint


async def test_token_endpoint_limit_answers_429_in_the_oauth_shape(start: Start) -> None:
    """Past the per-address quota: 429, RFC 6749 §5.2 body, no-store, Retry-After
    and the draft RateLimit fields; the refused request is not counted."""
    async with start(rate_limit_token_ip="3/minute") as instance:
        async with client_from(instance, "198.51.100.1") as http:
            assert [await spent_refresh(http) for _ in range(3)] == [400, 400, 400]
            refused = await http.post("/oauth/token", data={"grant_type": "password"})
        body = assert_oauth_error(refused, 429, "invalid_request")
        assert body["error_description"] == "Too many requests; try again later."
        assert refused.headers["pragma"] == "no-cache"
        fields = rate_limit_fields(refused)
        assert 1 <= fields["retry_after"] <= 60
        assert fields["ratelimit-policy"] == {"name": "token_ip", "q": 3, "w": 60}
        assert fields["ratelimit"] == {"name": "token_ip", "r": 0, "t": fields["retry_after"]}
        async with client_from(instance, "198.51.100.2") as other:
            assert await spent_refresh(other) == 400


async def test_account_limit_holds_across_addresses_and_spellings(start: Start) -> None:
    """The per-account quota counts every address and every spelling of the
    email; another account from the same addresses is not affected."""
    async with start(rate_limit_token_account="3/minute") as instance:
        await register_user(instance, ALICE)
        spellings = [ALICE, "ALICE@example.com", " Alice@Example.COM "]
        for n, email in enumerate(spellings):
            wrong = await token_request(instance, f"198.51.100.{n + 1}", email, "wrong password")
            assert_oauth_error(wrong, 400, "invalid_grant")
        refused = await token_request(instance, "198.51.100.9", ALICE)
        assert_oauth_error(refused, 429, "invalid_request", PASSWORD)
        assert rate_limit_fields(refused)["ratelimit-policy"]["name"] == "token_account"
        await register_user(instance, "bob@example.com")
        other = await token_request(instance, "198.51.100.1", "bob@example.com")
        assert other.status_code == 200, other.text


async def test_limit_passes_again_after_the_window(start: Start, wall_clock: WallClock) -> None:
    """A moving window: one more request passes once the oldest leaves it, and
    Retry-After says when that is."""
    async with start(rate_limit_token_ip="2/minute") as instance, client_from(instance) as http:
        assert await spent_refresh(http) == 400
        wall_clock.advance(30)
        assert await spent_refresh(http) == 400
        refused = await http.post("/oauth/token", data={"grant_type": "refresh_token"})
        assert rate_limit_fields(refused)["retry_after"] == 30
        wall_clock.advance(29)
        assert await spent_refresh(http) == 429
        wall_clock.advance(1.5)
        assert await spent_refresh(http) == 400
        assert await spent_refresh(http) == 429


async def test_clearing_a_limit_lets_requests_through(start: Start) -> None:
    """The limiter's reset forgets every counter (what a window's end does)."""
    async with start(rate_limit_token_ip="1/hour") as instance, client_from(instance) as http:
        assert [await spent_refresh(http) for _ in range(2)] == [400, 429]
        await instance.limiter.reset()
        assert await spent_refresh(http) == 400


# ------------------------------------------------------- other limited routes


async def test_registration_is_limited_per_address(start: Start) -> None:
    """Sign-ups past the quota: a 429 problem with the RateLimit fields."""
    async with start(rate_limit_register_ip="2/hour") as instance:
        async with client_from(instance, "198.51.100.1") as http:
            for n in range(2):
                created = await http.post(
                    "/auth/register", json={"email": f"u{n}@example.com", "password": PASSWORD}
                )
                assert created.status_code == 201, created.text
            refused = await http.post(
                "/auth/register", json={"email": "u9@example.com", "password": PASSWORD}
            )
        assert_problem(refused, 429, PASSWORD)
        fields = rate_limit_fields(refused)
        assert fields["ratelimit-policy"] == {"name": "register_ip", "q": 2, "w": 3600}
        assert 1 <= fields["retry_after"] <= 3600
        async with client_from(instance, "198.51.100.2") as other:
            created = await other.post(
                "/auth/register", json={"email": "u9@example.com", "password": PASSWORD}
            )
            assert created.status_code == 201


async def test_password_change_is_limited_per_account(start: Start) -> None:
    """Password changes past the per-account quota answer 429, whatever the address."""
    async with start(rate_limit_password_change="2/minute") as instance:
        await register_user(instance, ALICE)
        token = (await token_request(instance, "198.51.100.1", ALICE)).json()["access_token"]
        attempt = {"current_password": "not the password", "new_password": "another long pass"}
        statuses = []
        for n in range(3):
            async with client_from(instance, f"198.51.100.{n + 1}") as http:
                response = await http.post("/me/password", json=attempt, headers=bearer(token))
                statuses.append(response.status_code)
        assert statuses == [403, 403, 429]
        assert_problem(response, 429)
        assert rate_limit_fields(response)["ratelimit-policy"]["name"] == "password_change"


async def test_disabled_limits_let_everything_through(start: Start) -> None:
    """BASTION_RATE_LIMITS_ENABLED=false: no quota applies (the policies still parse)."""
    limits = {"rate_limits_enabled": False, "rate_limit_token_ip": "1/hour"}
    async with start(**limits) as instance, client_from(instance) as http:
        assert {await spent_refresh(http) for _ in range(5)} == {400}


# ---------------------------------------------------------- client addresses


async def test_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(start: Start) -> None:
    """Without a trusted proxy, X-Forwarded-For is ignored: the socket decides."""
    async with start(rate_limit_token_ip="2/minute") as instance:
        async with client_from(instance, "198.51.100.1") as http:
            statuses = [
                await spent_refresh(http, {"X-Forwarded-For": f"192.0.2.{n}"}) for n in range(4)
            ]
        assert statuses == [400, 400, 429, 429]


async def test_trusted_proxy_forwarded_for_names_the_client(start: Start) -> None:
    """Through a trusted proxy each forwarded client has its own quota; a forged
    entry on the left does not move it; garbage falls back to the proxy."""
    limits = {"rate_limit_token_ip": "2/minute", "trusted_proxies": "10.0.0.0/8"}
    async with start(**limits) as instance, client_from(instance, "10.1.2.3") as proxy:

        async def status(xff: str) -> int:
            return await spent_refresh(proxy, {"X-Forwarded-For": xff})

        assert [await status("192.0.2.1") for _ in range(3)] == [400, 400, 429]
        assert await status("192.0.2.2") == 400
        assert await status("1.1.1.1, 192.0.2.1") == 429  # forged left entry ignored
        assert await status("192.0.2.3, 10.9.9.9") == 400  # inner proxy skipped
        assert await status("192.0.2.3") == 400
        assert await status("192.0.2.3") == 429
        assert [await status("not-an-ip") for _ in range(3)] == [400, 400, 429]
        assert await spent_refresh(proxy) == 429  # the proxy's own address


def _request(peer: str | None, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": headers,
        "client": (peer, 1234) if peer else None,
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        pytest.param([], "198.51.100.1", ["192.0.2.1"], "198.51.100.1", id="no-proxies"),
        pytest.param(["10.0.0.1"], "198.51.100.1", ["192.0.2.1"], "198.51.100.1", id="untrusted"),
        pytest.param(["10.0.0.1"], "10.0.0.1", [], "10.0.0.1", id="trusted-no-header"),
        pytest.param(["10.0.0.1"], "10.0.0.1", ["192.0.2.1"], "192.0.2.1", id="trusted"),
        pytest.param(
            ["10.0.0.0/8"], "10.0.0.1", ["6.6.6.6, 192.0.2.1"], "192.0.2.1", id="rightmost"
        ),
        pytest.param(
            ["10.0.0.0/8"], "10.0.0.1", ["192.0.2.1", "10.0.0.2"], "192.0.2.1", id="two-headers"
        ),
        pytest.param(
            ["10.0.0.0/8"], "10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3", id="all-proxies"
        ),
        pytest.param(["10.0.0.0/8"], "10.0.0.1", ["garbage"], "10.0.0.1", id="garbage"),
        pytest.param(
            ["10.0.0.0/8"], "10.0.0.1", ["192.0.2.1, 10.0.0.2:80"], "10.0.0.1", id="port-garbage"
        ),
        pytest.param(["10.0.0.0/8"], "10.0.0.1", [""], "10.0.0.1", id="empty"),
        pytest.param(["10.0.0.0/8"], "::ffff:10.0.0.1", ["192.0.2.1"], "192.0.2.1", id="mapped"),
        pytest.param(["fd00::/8"], "fd00::1", ["2001:db8::1"], "2001:db8::1", id="ipv6"),
        pytest.param(["10.0.0.0/8"], None, ["192.0.2.1"], None, id="no-peer"),
    ],
)
def test_client_address_table(
    trusted: list[str], peer: str | None, forwarded: list[str], expected: str | None
) -> None:
    """Which address a request is counted under, for trusted and other peers."""
    assert TrustedProxies(trusted).client_ip(_request(peer, *forwarded)) == expected


# ------------------------------------------------------ configuration, keys


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_limit_token_ip", "lots"),
        ("rate_limit_token_account", "10/fortnight"),
        ("rate_limit_register_ip", "0/hour"),
        ("rate_limit_password_change", "1/second;5/minute"),
    ],
)
def test_invalid_limits_refuse_to_start(
    make_settings: Callable[..., Settings], field: str, value: str
) -> None:
    """A limit that does not parse (or is zero, or is several) names its setting."""
    with pytest.raises(ConfigurationError) as raised:
        Bastion(make_settings(**{field: value}))
    assert f"BASTION_{field.upper()}" in str(raised.value)


def test_invalid_trusted_proxy_refuses_to_start(make_settings: Callable[..., Settings]) -> None:
    """A trusted proxy that is neither an IP nor a CIDR names BASTION_TRUSTED_PROXIES."""
    with pytest.raises(ConfigurationError, match="BASTION_TRUSTED_PROXIES"):
        Bastion(make_settings(trusted_proxies="10.0.0.0/8,proxy.internal"))


def test_keys_are_namespaced_hashed_and_canonical() -> None:
    """An account named like an address never shares its key; emails fold;
    IPv6 counts per /64 and IPv4-mapped IPv6 as IPv4; no raw value is kept."""
    assert account_key("192.0.2.1") != ip_key("192.0.2.1")
    assert account_key("Alice@Example.com ") == account_key("alice@example.com")
    assert ip_key("2001:db8::1") == ip_key("2001:db8::ffff:1")
    assert ip_key("2001:db8::1") != ip_key("2001:db8:0:1::1")
    assert ip_key("::ffff:192.0.2.1") == ip_key("192.0.2.1")
    assert "alice" not in account_key("alice@example.com")
    assert "/" not in account_key("a/b@example.com")


async def test_limiter_without_redis_counts_in_memory() -> None:
    """The service alone: the quota per key, then RateLimited with the policy."""
    limiter = RateLimiter({"token_ip": "1/minute"})
    try:
        await limiter.hit("token_ip", ip_key("192.0.2.1"))
        with pytest.raises(RateLimited) as raised:
            await limiter.hit("token_ip", ip_key("192.0.2.1"))
        assert raised.value.policy == "token_ip"
        assert raised.value.quota == 1
        await limiter.hit("token_ip", ip_key("192.0.2.2"))
    finally:
        await limiter.aclose()


# --------------------------------------------------------------------- Redis


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own, deleted afterwards."""
    prefix = f"bastion:test:{secrets.token_hex(6)}"
    async with redis_connection() as client:
        yield prefix
        await delete_keys(client, f"{prefix}*")


@pytest.mark.redis
async def test_limits_are_shared_by_instances_over_redis(start: Start, redis_prefix: str) -> None:
    """Two instances on one Redis spend one quota; the second refuses."""
    settings = {
        "redis_url": redis_url(),
        "rate_limit_key_prefix": redis_prefix,
        "rate_limit_token_ip": "2/minute",
    }
    async with (
        start(**settings) as first,
        start(**settings) as second,
        client_from(first) as a,
        client_from(second) as b,
    ):
        assert await spent_refresh(a) == 400
        assert await spent_refresh(b) == 400
        refused = await a.post("/oauth/token", data={"grant_type": "refresh_token"})
        assert_oauth_error(refused, 429, "invalid_request")
        assert 1 <= rate_limit_fields(refused)["retry_after"] <= 60
        assert await spent_refresh(b) == 429
        async with client_from(second, "198.51.100.99") as elsewhere:
            assert await spent_refresh(elsewhere) == 400


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"rate_limits_enabled": True}, id="rate-limit"),
        pytest.param({"rate_limits_enabled": False, "lockout_enabled": True}, id="lockout"),
    ],
)
async def test_redis_down_fails_closed(start: Start, overrides: dict[str, object]) -> None:
    """Redis configured but unreachable: the token endpoint answers 503 (no
    token, no 500), before any password is checked."""
    async with start(
        redis_url="redis://127.0.0.1:1/0", revocation_store="sql", startup_retries=0, **overrides
    ) as instance:
        await register_user(instance, ALICE)
        response = await token_request(instance, "198.51.100.1", ALICE)
        assert_problem(response, 503, PASSWORD)
        assert response.headers["cache-control"] == "no-store"
        assert "access_token" not in response.text


# ----------------------------------------------------- two server processes


@pytest.fixture
def two_servers(tmp_path: Path, redis_prefix: str) -> Iterator[list[ServerProcess]]:
    """Two `bastion serve` processes on one SQLite file and one Redis."""
    env = server_env(
        {
            "BASTION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}",
            # Set, not generated: two processes must not race to create the file.
            "BASTION_SECRET_KEY": TEST_SECRET.get_secret_value(),
            "BASTION_ARGON2_MEMORY_COST": "8192",
            "BASTION_ARGON2_TIME_COST": "1",
            "BASTION_REDIS_URL": redis_url(),
            "BASTION_RATE_LIMIT_KEY_PREFIX": redis_prefix,
            "BASTION_RATE_LIMIT_TOKEN_IP": "5/minute",
            "BASTION_LOCKOUT_IP_FAILURES": "2",
            "BASTION_PURGE_INTERVAL": "0",
        }
    )
    run_cli(env, tmp_path, "db", "upgrade")
    with servers(2, env, tmp_path) as started:
        yield started


@pytest.mark.redis
async def test_two_server_processes_share_limits_and_lockout(two_servers: list[str]) -> None:
    """Failures through server A throttle the account from that address on
    server B, and the address's quota spent on A is spent on B."""
    a, b = (server.url for server in two_servers)
    async with httpx.AsyncClient() as http:
        await wait_all_up(http, two_servers)
        created = await http.post(f"{a}/auth/register", json={"email": ALICE, "password": PASSWORD})
        assert created.status_code == 201, created.text

        def grant(password: str) -> dict[str, str]:
            return {"grant_type": "password", "username": ALICE, "password": password}

        for _ in range(2):  # token_ip hits 1 and 2
            wrong = await http.post(f"{a}/oauth/token", data=grant("wrong password"))
            assert_oauth_error(wrong, 400, "invalid_grant")
        locked = await http.post(f"{b}/oauth/token", data=grant(PASSWORD))  # hit 3
        assert_oauth_error(locked, 429, "invalid_request", PASSWORD)
        assert "ratelimit-policy" not in locked.headers  # a lockout, not a quota
        for _ in range(2):  # hits 4 and 5
            assert (await http.post(f"{b}/oauth/token", data=grant(PASSWORD))).status_code == 429
        limited = await http.post(f"{a}/oauth/token", data={"grant_type": "refresh_token"})
        assert_oauth_error(limited, 429, "invalid_request")
        assert rate_limit_fields(limited)["ratelimit-policy"] == {
            "name": "token_ip",
            "q": 5,
            "w": 60,
        }
