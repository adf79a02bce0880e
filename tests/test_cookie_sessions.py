"""Browser sessions over HTTP: ``/auth/session``, the cookie, timeouts,
rotation at login, logout, and what else ends a session."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import text

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.errors import ConfigurationError
from bastion.server.app import create_app
from bastion.settings import Settings
from bastion.stores.memory import MemoryBrowserSessionStore
from bastion.stores.redis import RedisBrowserSessionStore
from bastion.stores.sql import SqlBrowserSessionStore
from tests.backends import delete_keys, redis_connection, redis_url
from tests.conftest import PASSWORD
from tests.http_checks import assert_problem
from tests.session_flows import (
    COOKIE,
    SAME_ORIGIN,
    SessionLogin,
    cookie_header,
    session_login,
    set_cookies,
)
from tests.token_flows import audit_events, bearer, http_client, register, running

pytestmark = pytest.mark.anyio

IDLE = 1800
JSON = "application/json"
ABSOLUTE = 43_200


@pytest.fixture
async def login(client: httpx.AsyncClient, registered: dict[str, str]) -> SessionLogin:
    return await session_login(client, registered["email"], registered["password"])


async def current(client: httpx.AsyncClient, cookie: str) -> httpx.Response:
    return await client.get("/auth/session", headers=cookie_header(cookie))


def assert_session_refused(response: httpx.Response, *secrets: str) -> None:
    """401 problem with the cookie challenge, and the cookie cleared."""
    assert_problem(response, 401, *secrets)
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Cookie realm="bastion"')
    assert f'cookie-name="{COOKIE}"' in challenge


# ------------------------------------------------------------------ login


async def test_login_sets_a_host_only_http_only_secure_lax_session_cookie(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """The cookie: __Host- name, HttpOnly, Secure, SameSite=Lax, Path=/, no
    Domain, no Max-Age (a browser-session cookie); the answer is not cached."""
    response = await client.post(
        "/auth/session",
        json={"email": registered["email"], "password": PASSWORD},
        headers=SAME_ORIGIN,
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    cookie = set_cookies(response)[COOKIE]
    assert len(cookie["value"]) == 43
    assert {"httponly", "secure", "path", "samesite"} <= cookie.keys()
    assert cookie["path"] == "/"
    assert cookie["samesite"].lower() == "lax"
    assert not {"domain", "max-age", "expires"} & cookie.keys()
    body = response.json()
    assert set(body) == {"csrf_token", "expires_at", "idle_timeout"}
    assert body["idle_timeout"] == IDLE
    assert cookie["value"] not in response.text


async def test_login_by_form_works_too(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """The same fields as a form body log in the same way."""
    response = await client.post(
        "/auth/session",
        data={"email": registered["email"], "password": PASSWORD},
        headers=SAME_ORIGIN,
    )
    assert response.status_code == 200, response.text
    assert COOKIE in set_cookies(response)


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("alice@example.com", "not the password at all"),
        ("nobody@example.com", PASSWORD),
        ("ALICE@example.com", PASSWORD.upper()),
    ],
)
async def test_a_failed_login_is_a_generic_401_and_sets_nothing(
    client: httpx.AsyncClient, registered: dict[str, str], email: str, password: str
) -> None:
    """Wrong password and unknown user answer alike; no cookie is set."""
    response = await client.post(
        "/auth/session", json={"email": email, "password": password}, headers=SAME_ORIGIN
    )
    body = assert_problem(response, 401, password)
    assert body["detail"] == "Invalid username or password."
    assert response.headers["www-authenticate"].startswith("Cookie ")
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 422),
        (b'{"email": "a@example.com"}', "application/json", 422),
        (b'{"email": "a@example.com", "password": ""}', "application/json", 422),
        (b'{"email": "a@example.com", "password": "x", "admin": true}', "application/json", 422),
        (b'["a@example.com", "x"]', "application/json", 422),
        (b'{"email": 5, "password": "x"}', "application/json", 422),
        (b"email=a%40example.com", "application/x-www-form-urlencoded", 422),
        (b"email=a@example.com&password=x", "text/plain", 415),
        (b"", "", 415),
        (b'{"email": "%s@example.com", "password": "x"}' % (b"a" * 400), JSON, 422),
        (b'{"email": "a@example.com", "password": "%s"}' % (b"x" * 70_000), JSON, 413),
    ],
)
async def test_malformed_login_bodies_are_refused(
    client: httpx.AsyncClient, content: bytes, content_type: str, status: int
) -> None:
    """Broken, incomplete, oversized or wrongly typed bodies: a problem, never a 500."""
    headers = {**SAME_ORIGIN, "Content-Type": content_type} if content_type else SAME_ORIGIN
    response = await client.post("/auth/session", content=content, headers=headers)
    assert_problem(response, status)
    assert "set-cookie" not in response.headers


async def test_login_is_audited_with_the_session_method(
    client: httpx.AsyncClient, registered: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """login.succeeded names the user, the session's public id and method=session."""
    login = await session_login(client, registered["email"], PASSWORD)
    session = (await current(client, login.cookie)).json()
    events = [e for e in audit_events(caplog, "login.succeeded") if e.get("method") == "session"]
    assert len(events) == 1
    assert events[0]["actor"] == registered["id"]
    assert events[0]["target"] == session["session_id"]


# ------------------------------------------------------------------ using the session


async def test_the_session_answers_with_its_csrf_token(
    client: httpx.AsyncClient, login: SessionLogin, registered: dict[str, str]
) -> None:
    """GET /auth/session: who, until when, and the same CSRF token as at login."""
    response = await current(client, login.cookie)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == registered["id"]
    assert body["csrf_token"] == login.csrf_token
    assert body["expires_at"] == login.body["expires_at"]
    assert login.cookie not in response.text
    assert response.headers["cache-control"] == "no-store"


async def test_no_cookie_is_a_401_with_a_challenge(client: httpx.AsyncClient) -> None:
    """Without a cookie: 401 and a challenge naming the login page (RFC 9110 §11.6.1)."""
    response = await client.get("/auth/session")
    assert_session_refused(response)
    assert 'form-action="/login"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"), id="one-char-changed"),
        pytest.param(lambda v: v[:-1], id="truncated"),
        pytest.param(lambda v: v + "A", id="one-char-longer"),
        pytest.param(lambda v: v * 200, id="oversized"),
        pytest.param(lambda v: "", id="empty"),
        pytest.param(lambda v: "A" * 43, id="unknown-well-formed"),
        pytest.param(lambda v: v[:20] + "%00" + v[23:], id="control-char"),
        pytest.param(lambda v: v.upper(), id="case-changed"),
    ],
)
async def test_a_tampered_or_unknown_cookie_is_refused_and_cleared(
    client: httpx.AsyncClient, login: SessionLogin, mangle: Any
) -> None:
    """Any other value than the one minted: 401, and the answer clears the cookie."""
    value = mangle(login.cookie)
    assert value != login.cookie
    response = await current(client, value)
    assert_session_refused(response, login.cookie)
    cleared = set_cookies(response)[COOKIE]
    assert cleared["value"] == ""
    assert "secure" in cleared
    assert cleared["path"] == "/"
    assert (await current(client, login.cookie)).status_code == 200  # the real one still works


async def test_the_idle_timeout_ends_an_unused_session(
    client: httpx.AsyncClient, login: SessionLogin, clock: FrozenClock, bastion: Bastion
) -> None:
    """Unused for the idle timeout: refused, and the server-side record is gone."""
    clock.advance(IDLE - 1)
    assert (await current(client, login.cookie)).status_code == 200
    clock.advance(IDLE)
    assert_session_refused(await current(client, login.cookie))
    assert await bastion.browser_session_store.purge(now=clock.now()) == 0  # deleted when seen


async def test_activity_keeps_a_session_alive_until_the_absolute_timeout(
    client: httpx.AsyncClient, login: SessionLogin, clock: FrozenClock
) -> None:
    """Used every 20 minutes it lives past many idle timeouts, but never past 12 hours."""
    for _ in range(ABSOLUTE // 1200 - 1):
        clock.advance(1200)
        assert (await current(client, login.cookie)).status_code == 200
    clock.advance(1200)  # exactly the absolute end
    assert_session_refused(await current(client, login.cookie))


async def test_last_seen_is_written_at_most_once_a_minute(
    client: httpx.AsyncClient, login: SessionLogin, clock: FrozenClock, bastion: Bastion
) -> None:
    """Requests within the touch interval do not move last_seen_at; a later one does."""
    first = (await current(client, login.cookie)).json()["last_seen_at"]
    clock.advance(59)
    assert (await current(client, login.cookie)).json()["last_seen_at"] == first
    clock.advance(1)
    assert (await current(client, login.cookie)).json()["last_seen_at"] != first
    assert bastion.browser_sessions.touch_interval == 60


async def test_a_login_rotates_the_session_id(
    client: httpx.AsyncClient, login: SessionLogin, registered: dict[str, str]
) -> None:
    """Logging in with a cookie ends that session and mints a new id (no fixation)."""
    again = await session_login(client, registered["email"], PASSWORD, cookie=login.cookie)
    assert again.cookie != login.cookie
    assert again.csrf_token != login.csrf_token
    assert_session_refused(await current(client, login.cookie))
    assert (await current(client, again.cookie)).status_code == 200


async def test_a_login_never_adopts_a_cookie_the_client_chose(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """A planted, well-formed id is not used for the new session."""
    planted = "P" * 43
    login = await session_login(client, registered["email"], PASSWORD, cookie=planted)
    assert login.cookie != planted
    assert_session_refused(await current(client, planted))


async def test_logout_ends_the_server_side_session(
    client: httpx.AsyncClient, login: SessionLogin, caplog: pytest.LogCaptureFixture
) -> None:
    """DELETE /auth/session: 204, the cookie cleared, and a replayed copy is dead."""
    response = await client.delete("/auth/session", headers=login.headers())
    assert response.status_code == 204, response.text
    assert set_cookies(response)[COOKIE]["value"] == ""
    assert_session_refused(await current(client, login.cookie))
    replay = await client.delete("/auth/session", headers=login.headers())
    assert_session_refused(replay)
    assert [e["method"] for e in audit_events(caplog, "logout")] == ["session"]


async def test_other_sessions_survive_a_logout(
    client: httpx.AsyncClient, login: SessionLogin, registered: dict[str, str]
) -> None:
    """Logging out one browser leaves the user's other browsers signed in."""
    other = await session_login(client, registered["email"], PASSWORD)
    assert (await client.delete("/auth/session", headers=login.headers())).status_code == 204
    assert (await current(client, other.cookie)).status_code == 200


# ------------------------------------------------------------------ what else ends sessions


async def test_a_password_change_ends_every_session(
    client: httpx.AsyncClient, login: SessionLogin, access_token: str
) -> None:
    """POST /me/password signs every browser out."""
    response = await client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase 42"},
        headers=bearer(access_token),
    )
    assert response.status_code == 204, response.text
    assert_session_refused(await current(client, login.cookie))


async def test_sign_out_everywhere_ends_browser_sessions_and_counts_them(
    client: httpx.AsyncClient, login: SessionLogin, registered: dict[str, str], access_token: str
) -> None:
    """POST /me/sessions/revoke-all ends the browser sessions too, counted in the answer."""
    await session_login(client, registered["email"], PASSWORD)
    response = await client.post("/me/sessions/revoke-all", headers=bearer(access_token))
    assert response.status_code == 200, response.text
    assert response.json()["revoked"] == 3  # one refresh family, two browsers
    assert_session_refused(await current(client, login.cookie))


async def test_a_disabled_user_is_refused_even_with_a_live_session(
    client: httpx.AsyncClient, login: SessionLogin, registered: dict[str, str], bastion: Bastion
) -> None:
    """The account disabled behind the session's back: 401, and the session is gone."""
    user_id = uuid.UUID(registered["id"])
    await bastion.users.set_active(user_id, False, now=bastion.clock.now())
    assert_session_refused(await current(client, login.cookie))
    assert await bastion.browser_session_store.list_for_user(user_id, now=bastion.clock.now()) == []


async def test_disabling_a_user_ends_their_sessions(
    client: httpx.AsyncClient, login: SessionLogin, registered: dict[str, str], bastion: Bastion
) -> None:
    """The disable path (revoke_everything) ends the browser sessions, even if re-enabled."""
    user_id = uuid.UUID(registered["id"])
    await bastion.users.set_active(user_id, False, now=bastion.clock.now())
    await bastion.revocations.revoke_everything(user_id, reason="user_disabled")
    await bastion.users.set_active(user_id, True, now=bastion.clock.now())
    assert_session_refused(await current(client, login.cookie))


async def test_get_never_changes_state(
    client: httpx.AsyncClient, login: SessionLogin, bastion: Bastion, clock: FrozenClock
) -> None:
    """Every parameterless GET route, called with a live cookie from a hostile
    origin and no CSRF token, leaves every table but the touch stamp as it was."""

    async def snapshot() -> dict[str, Any]:
        tables = ["users", "browser_sessions", "refresh_families", "api_keys", "user_roles"]
        async with bastion.engine.connect() as connection:
            return {
                table: (await connection.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar()  # noqa: S608
                for table in tables
            }

    before = await snapshot()
    documented = create_app(bastion=bastion).openapi()["paths"]
    paths = [path for path, ops in documented.items() if "get" in ops and "{" not in path]
    assert "/auth/session" in paths
    for path in paths:
        response = await client.get(
            path, headers=login.headers(csrf=False, origin="https://evil.example")
        )
        assert response.status_code < 500, path
    assert await snapshot() == before
    assert (await current(client, login.cookie)).status_code == 200


# ------------------------------------------------------------------ the service's account-page API


async def test_sessions_are_listed_with_the_current_one_marked(
    client: httpx.AsyncClient,
    login: SessionLogin,
    registered: dict[str, str],
    bastion: Bastion,
    clock: FrozenClock,
) -> None:
    """list(): every live session, newest first, the asking one marked, no secrets."""
    clock.advance(1)
    other = await session_login(
        client, registered["email"], PASSWORD, headers={"User-Agent": "Firefox"}
    )
    mine = (await current(client, login.cookie)).json()["session_id"]
    listed = await bastion.browser_sessions.list(uuid.UUID(registered["id"]), current=mine)
    assert [s.current for s in listed] == [False, True]
    assert listed[0].user_agent == "Firefox"
    assert all(login.cookie not in repr(s) and other.cookie not in repr(s) for s in listed)


async def test_ending_another_users_session_is_not_found(
    client: httpx.AsyncClient, login: SessionLogin, registered: dict[str, str], bastion: Bastion
) -> None:
    """end_session(): someone else's public id is NotFound, like an unknown one."""
    from bastion.errors import NotFound

    public_id = (await current(client, login.cookie)).json()["session_id"]
    with pytest.raises(NotFound):
        await bastion.browser_sessions.end_session(public_id, uuid.uuid4())
    with pytest.raises(NotFound):
        await bastion.browser_sessions.end_session("x" * 500, uuid.UUID(registered["id"]))
    assert (await current(client, login.cookie)).status_code == 200
    await bastion.browser_sessions.end_session(public_id, uuid.UUID(registered["id"]))
    assert_session_refused(await current(client, login.cookie))


async def test_purge_removes_dead_sessions(
    client: httpx.AsyncClient, login: SessionLogin, bastion: Bastion, clock: FrozenClock
) -> None:
    """Housekeeping deletes sessions past their idle timeout."""
    clock.advance(IDLE)
    assert (await bastion.purge())["browser_sessions"] == 1
    assert (await bastion.purge())["browser_sessions"] == 0


# ------------------------------------------------------------------ settings and store choice


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"session_cookie_name": "bastion_session"}, "BASTION_SESSION_COOKIE_NAME"),
        ({"session_cookie_name": "__Secure-bastion"}, "BASTION_SESSION_COOKIE_NAME"),
        ({"session_cookie_secure": False}, "BASTION_SESSION_COOKIE_SECURE"),
    ],
)
def test_production_refuses_a_weak_session_cookie(
    make_settings: Callable[..., Settings], overrides: dict[str, object], problem: str
) -> None:
    """Production names the cookie setting that loses the __Host- guarantees."""
    settings = make_settings(mode="production", issuer="https://auth.example.com", **overrides)
    assert any(problem in line for line in settings.production_problems())
    with pytest.raises(ConfigurationError, match=problem):
        settings.check_production()
    make_settings(**overrides).check_production()  # development allows it
    default = make_settings(mode="production", issuer="https://auth.example.com")
    assert not any("SESSION" in line for line in default.production_problems())


@pytest.mark.parametrize(
    "overrides",
    [
        {"csrf_trusted_origins": "https://app.example.com/login"},
        {"csrf_trusted_origins": "app.example.com"},
        {"session_idle_timeout": 10},
        {"session_absolute_timeout": 10**9},
        {"session_cookie_name": "bad name;"},
        {"session_store": "files"},
    ],
)
def test_bad_session_settings_are_refused(
    make_settings: Callable[..., Settings], overrides: dict[str, object]
) -> None:
    """Out-of-range timeouts, cookie names that are not tokens, non-origins: refused."""
    with pytest.raises(ValidationError):
        make_settings(**overrides)


def test_the_idle_timeout_never_exceeds_the_absolute_one(
    make_settings: Callable[..., Settings],
) -> None:
    """An idle timeout longer than the absolute one is cut to it."""
    settings = make_settings(session_idle_timeout=7200, session_absolute_timeout=3600)
    assert settings.session_idle_timeout == 3600


@pytest.mark.parametrize(
    ("overrides", "store"),
    [
        ({}, SqlBrowserSessionStore),
        ({"session_store": "memory"}, MemoryBrowserSessionStore),
        (
            {"session_store": "auto", "redis_url": "redis://127.0.0.1:6379/0"},
            RedisBrowserSessionStore,
        ),
    ],
)
def test_the_session_store_follows_the_settings(
    make_settings: Callable[..., Settings], overrides: dict[str, object], store: type
) -> None:
    """auto: Redis when configured, else SQL; memory only when asked for."""
    assert isinstance(Bastion(make_settings(**overrides)).browser_session_store, store)


def test_a_redis_session_store_needs_redis(make_settings: Callable[..., Settings]) -> None:
    """BASTION_SESSION_STORE=redis without BASTION_REDIS_URL refuses to start."""
    with pytest.raises(ConfigurationError, match="BASTION_SESSION_STORE"):
        Bastion(make_settings(session_store="redis"))


@pytest.mark.redis
async def test_the_whole_flow_over_a_redis_store(
    make_settings: Callable[..., Settings], clock: FrozenClock
) -> None:
    """Login, use, rotation and logout with sessions in Redis."""
    prefix = f"bastion-test-{uuid.uuid4().hex[:12]}:"
    async with redis_connection() as redis:
        settings = make_settings(
            redis_url=redis_url(),
            session_redis_prefix=prefix + "session:",
            rate_limit_key_prefix=prefix + "limits",
            revocation_store="sql",
        )
        try:
            async with running(settings, clock) as bastion, http_client(bastion) as http:
                assert isinstance(bastion.browser_session_store, RedisBrowserSessionStore)
                await register(http, "redis@example.com")
                first = await session_login(http, "redis@example.com", PASSWORD)
                second = await session_login(
                    http, "redis@example.com", PASSWORD, cookie=first.cookie
                )
                assert_session_refused(await current(http, first.cookie))
                assert (await current(http, second.cookie)).status_code == 200
                response = await http.delete("/auth/session", headers=second.headers())
                assert response.status_code == 204
                assert_session_refused(await current(http, second.cookie))
        finally:
            await delete_keys(redis, f"{prefix}*")


async def test_session_logins_share_the_login_limits(
    make_settings: Callable[..., Settings], clock: FrozenClock
) -> None:
    """The per-IP login limit (token_ip) counts session logins too: past it, 429
    with Retry-After, and no cookie."""
    settings = make_settings(rate_limits_enabled=True, rate_limit_token_ip="2/minute")
    async with running(settings, clock) as bastion, http_client(bastion) as http:
        await register(http, "limited@example.com")
        for _ in range(2):
            await session_login(http, "limited@example.com", PASSWORD)
        response = await http.post(
            "/auth/session",
            json={"email": "limited@example.com", "password": PASSWORD},
            headers=SAME_ORIGIN,
        )
        assert_problem(response, 429, PASSWORD)
        assert int(response.headers["retry-after"]) > 0
        assert "set-cookie" not in response.headers
