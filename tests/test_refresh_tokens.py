"""Refresh tokens at ``POST /oauth/token`` (RFC 6749 §6, RFC 9700 §4.14):
rotation, reuse detection with family revocation, the reuse grace window,
scope narrowing, absolute and idle expiry, hostile values, and N concurrent
refreshes with one token on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import httpx
import pytest

from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.settings import Settings
from bastion.stores.protocols import RefreshTokenRecord
from tests.conftest import PASSWORD
from tests.http_checks import assert_no_leak, assert_oauth_error
from tests.token_flows import (
    BOB,
    BOB_PASSWORD,
    audit_events,
    database_url_for,
    http_client,
    login,
    me_status,
    refresh,
    register,
    rows,
    running,
    sha256,
)

pytestmark = pytest.mark.anyio

EMAIL = "alice@example.com"
REFRESH_SHAPE = re.compile(r"brt_[A-Za-z0-9_-]{43}")
DAY = 86_400
TTL = 7 * DAY
"""The default ``refresh_token_ttl``."""


@pytest.fixture
async def tokens(client: httpx.AsyncClient, registered: dict[str, str]) -> dict[str, Any]:
    """The token response of one password-grant login of ``registered``."""
    return await login(client, registered["email"], registered["password"])


def database_bytes(directory: Path) -> bytes:
    """The SQLite database file, its WAL and shared memory, concatenated."""
    return b"".join(p.read_bytes() for p in directory.glob("bastion.db*"))


async def rotate(client: httpx.AsyncClient, refresh_token: str, **form: str) -> dict[str, Any]:
    """A refresh that must succeed; returns the token response body."""
    response = await refresh(client, refresh_token, **form)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def assert_dead(client: httpx.AsyncClient, refresh_token: str) -> None:
    """The refresh token is refused with a plain ``invalid_grant``."""
    assert_oauth_error(await refresh(client, refresh_token), 400, "invalid_grant", refresh_token)


# ------------------------------------------------------------------ issuing and rotation


async def test_password_grant_returns_a_refresh_token(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """Login answers a ``brt_`` + 43 urlsafe-character refresh token, never cached."""
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": EMAIL, "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert REFRESH_SHAPE.fullmatch(body["refresh_token"]), body["refresh_token"]
    assert body["refresh_token"] not in body["access_token"]


async def test_refresh_rotates_and_spends_the_presented_token(
    client: httpx.AsyncClient, bastion: Bastion, tokens: dict[str, Any]
) -> None:
    """A refresh answers a new access and refresh token; the presented one is spent."""
    old = tokens["refresh_token"]
    response = await refresh(client, old)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "email profile"
    assert REFRESH_SHAPE.fullmatch(body["refresh_token"])
    assert body["refresh_token"] != old
    assert body["access_token"] != tokens["access_token"]
    assert await me_status(client, body["access_token"]) == 200

    spent = await bastion.refresh_store.find(sha256(old))
    successor = await bastion.refresh_store.find(sha256(body["refresh_token"]))
    assert spent is not None
    assert successor is not None
    assert spent[0].used_at is not None
    assert successor[0].used_at is None
    assert successor[0].parent_hash == sha256(old)
    assert successor[1].id == spent[1].id  # same family (session)


async def test_only_the_sha256_of_a_refresh_token_is_stored(
    client: httpx.AsyncClient, bastion: Bastion, tokens: dict[str, Any], tmp_path: Path
) -> None:
    """No table row and no byte of the database files holds a raw refresh token."""
    first = tokens["refresh_token"]
    second = (await rotate(client, first))["refresh_token"]
    stored = await rows(bastion, "SELECT * FROM refresh_tokens")
    assert len(stored) == 2
    everything = repr(stored) + repr(await rows(bastion, "SELECT * FROM refresh_families"))
    for raw in (first, second):
        assert raw not in everything
        assert raw.removeprefix("brt_") not in everything
        assert sha256(raw) in everything
    on_disk = database_bytes(tmp_path)
    assert on_disk  # the database and its WAL are there
    for raw in (first, second):
        assert raw.removeprefix("brt_").encode() not in on_disk


# ------------------------------------------------------------------ reuse detection


async def test_reuse_of_a_spent_token_revokes_the_whole_family(
    client: httpx.AsyncClient,
    tokens: dict[str, Any],
    registered: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 9700 §4.14.2: replaying a spent token is ``invalid_grant``, kills its
    successor too, and is audited as ``refresh_token.reuse_detected`` without the token."""
    first = tokens["refresh_token"]
    second = (await rotate(client, first))["refresh_token"]
    with caplog.at_level(logging.INFO, logger="bastion.audit"):
        replay = await refresh(client, first)
    assert_oauth_error(replay, 400, "invalid_grant", first, second)
    await assert_dead(client, second)

    events = audit_events(caplog, "refresh_token.reuse_detected")
    assert len(events) == 1
    assert events[0]["actor"] == registered["id"]
    assert events[0]["client_id"] == "bastion"
    UUID(events[0]["target"])  # the family id
    for raw in (first, second):
        assert raw not in caplog.text
        assert raw.removeprefix("brt_") not in caplog.text
    # A new login starts a new, healthy family.
    again = await login(client, registered["email"], registered["password"])
    assert (await refresh(client, again["refresh_token"])).status_code == 200


async def test_reuse_does_not_touch_other_families(
    client: httpx.AsyncClient, tokens: dict[str, Any], registered: dict[str, str]
) -> None:
    """Only the family of the replayed token dies; the user's other sessions live on."""
    other = await login(client, registered["email"], registered["password"])
    first = tokens["refresh_token"]
    await rotate(client, first)
    await assert_dead(client, first)
    assert (await refresh(client, other["refresh_token"])).status_code == 200


@pytest.mark.parametrize(
    ("replay_after", "family_survives"),
    [
        pytest.param(0, True, id="immediately"),
        pytest.param(5, True, id="at-the-grace-bound"),
        pytest.param(5.001, False, id="just-past-the-grace"),
        pytest.param(60, False, id="a-minute-later"),
    ],
)
async def test_reuse_grace_window(
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
    replay_after: float,
    family_survives: bool,
) -> None:
    """With ``refresh_reuse_grace=5`` a replay within 5 s fails but spares the
    family (a client's retry); a later replay revokes it."""
    async with (
        running(make_settings(refresh_reuse_grace=5), clock) as bastion,
        http_client(bastion) as http,
    ):
        await register(http, EMAIL)
        first = (await login(http, EMAIL))["refresh_token"]
        second = (await rotate(http, first))["refresh_token"]
        clock.advance(replay_after)
        assert_oauth_error(await refresh(http, first), 400, "invalid_grant", first)
        successor = await refresh(http, second)
        if family_survives:
            assert successor.status_code == 200, successor.text
        else:
            assert_oauth_error(successor, 400, "invalid_grant", second)


# ------------------------------------------------------------------ scope (RFC 6749 §6)


@pytest.mark.parametrize(
    ("login_scope", "steps"),
    [
        pytest.param(
            None, [("profile", "profile"), ("email profile", "email profile")], id="narrow-rewiden"
        ),
        pytest.param(None, [("email", "email"), (None, "email profile")], id="omitted-is-original"),
        pytest.param(None, [("profile", "profile"), ("email", "email")], id="narrow-to-other"),
        pytest.param(None, [(None, "email profile"), (None, "email profile")], id="unchanged"),
        pytest.param("profile", [(None, "profile"), ("profile", "profile")], id="login-narrowed"),
        pytest.param(None, [("profile profile", "profile")], id="repeated"),
    ],
)
async def test_refresh_scope_stays_within_what_login_granted(
    client: httpx.AsyncClient,
    registered: dict[str, str],
    login_scope: str | None,
    steps: list[tuple[str | None, str]],
) -> None:
    """RFC 6749 §6: a refresh may ask for any part of the scope granted at login,
    including widening back after narrowing; omitted, it means that original scope."""
    form = {"scope": login_scope} if login_scope is not None else {}
    token = (await login(client, registered["email"], registered["password"], **form))[
        "refresh_token"
    ]
    for asked, granted in steps:
        body = await rotate(client, token, **({"scope": asked} if asked is not None else {}))
        assert body["scope"] == granted
        token = body["refresh_token"]
        who = await client.get("/me", headers={"Authorization": f"Bearer {body['access_token']}"})
        assert who.status_code == (200 if "profile" in granted.split() else 403), who.text


@pytest.mark.parametrize(
    ("login_scope", "asked"),
    [
        pytest.param("profile", "email", id="other-scope"),
        pytest.param("profile", "profile email", id="wider-than-login"),
        pytest.param(None, "admin", id="unknown"),
        pytest.param(None, "profile admin", id="known-and-unknown"),
        pytest.param(None, "PROFILE", id="case-matters"),
        pytest.param(None, "profile\x00", id="nul"),
    ],
)
async def test_refresh_scope_never_granted_is_invalid_scope(
    client: httpx.AsyncClient, registered: dict[str, str], login_scope: str | None, asked: str
) -> None:
    """Asking a refresh for a scope login did not grant is ``invalid_scope``,
    and the presented token is not spent."""
    form = {"scope": login_scope} if login_scope is not None else {}
    token = (await login(client, registered["email"], registered["password"], **form))[
        "refresh_token"
    ]
    assert_oauth_error(await refresh(client, token, scope=asked), 400, "invalid_scope", token)
    assert (await refresh(client, token)).status_code == 200


async def test_scope_ceiling_survives_narrowed_rotations(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """Narrowing twice in a row never lowers the ceiling below the login scope."""
    token = (await login(client, registered["email"], registered["password"]))["refresh_token"]
    token = (await rotate(client, token, scope="profile"))["refresh_token"]
    token = (await rotate(client, token, scope="profile"))["refresh_token"]
    body = await rotate(client, token, scope="email")
    assert body["scope"] == "email"


# ------------------------------------------------------------------ expiry


@pytest.mark.parametrize(
    ("last_refresh_at", "ok"),
    [
        pytest.param(TTL - 1, True, id="a-second-before-the-end"),
        pytest.param(TTL, False, id="at-the-end"),
        pytest.param(TTL + DAY, False, id="a-day-after"),
    ],
)
async def test_absolute_expiry_is_not_extended_by_rotation(
    client: httpx.AsyncClient,
    tokens: dict[str, Any],
    clock: FrozenClock,
    last_refresh_at: int,
    ok: bool,
) -> None:
    """A family ends ``refresh_token_ttl`` after login however often it rotated
    (days 2, 4 and 6 here, each inside the idle timeout)."""
    token = tokens["refresh_token"]
    elapsed = 0
    for day in (2, 4, 6):
        clock.advance(day * DAY - elapsed)
        elapsed = day * DAY
        token = (await rotate(client, token))["refresh_token"]
    clock.advance(last_refresh_at - elapsed)
    response = await refresh(client, token)
    if ok:
        assert response.status_code == 200, response.text
    else:
        assert_oauth_error(response, 400, "invalid_grant", token)


async def test_expiry_is_the_same_for_a_token_never_used(
    client: httpx.AsyncClient, make_settings: Callable[..., Settings], clock: FrozenClock
) -> None:
    """Without rotation, the family dies at ``refresh_token_ttl`` too (idle timeout set equal)."""
    async with (
        running(make_settings(refresh_idle_timeout=TTL), clock) as bastion,
        http_client(bastion) as http,
    ):
        await register(http, EMAIL)
        token = (await login(http, EMAIL))["refresh_token"]
        clock.advance(TTL)
        await assert_dead(http, token)


@pytest.mark.parametrize(
    ("idle", "ok"),
    [
        pytest.param(3599, True, id="just-under-an-hour"),
        pytest.param(3600, False, id="an-hour"),
        pytest.param(3601, False, id="over-an-hour"),
    ],
)
async def test_idle_timeout(
    make_settings: Callable[..., Settings], clock: FrozenClock, idle: int, ok: bool
) -> None:
    """With ``refresh_idle_timeout=3600`` a token unused for an hour is dead;
    each rotation starts a new hour for the successor."""
    async with (
        running(make_settings(refresh_idle_timeout=3600), clock) as bastion,
        http_client(bastion) as http,
    ):
        await register(http, EMAIL)
        token = (await login(http, EMAIL))["refresh_token"]
        clock.advance(3000)
        token = (await rotate(http, token))["refresh_token"]  # 50 minutes: fine
        clock.advance(idle)
        response = await refresh(http, token)
        if ok:
            assert response.status_code == 200, response.text
        else:
            assert_oauth_error(response, 400, "invalid_grant", token)


# ------------------------------------------------------------------ who may refresh


async def test_disabled_user_cannot_refresh(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    tokens: dict[str, Any],
    registered: dict[str, str],
) -> None:
    """A disabled user's refresh is ``invalid_grant``, and the session stays
    ended when the account is enabled again."""
    user_id = UUID(registered["id"])
    await bastion.users.set_active(user_id, False, now=clock.now())
    token = tokens["refresh_token"]
    await assert_dead(client, token)
    await bastion.users.set_active(user_id, True, now=clock.now())
    await assert_dead(client, token)
    assert await bastion.refresh.sessions(user_id) == []


@pytest.mark.parametrize(
    "client_id",
    [
        pytest.param("evil-app", id="unknown"),
        pytest.param("BASTION", id="case-matters"),
        pytest.param("bastion ", id="trailing-space"),
    ],
)
async def test_refresh_with_another_client_id_is_invalid_client(
    client: httpx.AsyncClient, tokens: dict[str, Any], client_id: str
) -> None:
    """A refresh token presented with another ``client_id`` is 401 ``invalid_client``
    (no such client exists) and is not spent."""
    token = tokens["refresh_token"]
    response = await refresh(client, token, client_id=client_id)
    assert_oauth_error(response, 401, "invalid_client", token)
    assert response.headers["www-authenticate"]
    assert (await refresh(client, token, client_id="bastion")).status_code == 200


# ------------------------------------------------------------------ hostile values

UNKNOWN = "brt_" + "A" * 43


def hostile(kind: str, tokens: dict[str, Any]) -> str | None:
    values: dict[str, str | None] = {
        "missing": None,
        "empty": "",
        "garbage": "garbage",
        "prefix-only": "brt_",
        "wrong-prefix": "xrt_" + tokens["refresh_token"][4:],
        "no-prefix": tokens["refresh_token"][4:],
        "upper-cased": tokens["refresh_token"].upper(),
        "too-short": tokens["refresh_token"][:-1],
        "too-long-by-one": tokens["refresh_token"] + "A",
        "padded": tokens["refresh_token"] + "=",
        "surrounding-space": f" {tokens['refresh_token']} ",
        "nul": tokens["refresh_token"] + "\x00",
        "unknown": UNKNOWN,
        "access-token": tokens["access_token"],
        "non-ascii": "brt_" + "é" * 43,
        "non-ascii-digits": "brt_" + "٣" * 43,
        "5000-chars": "brt_" + "A" * 4996,
        "sql": "brt_' OR '1'='1",
    }
    return values[kind]


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        pytest.param("missing", "invalid_request", id="missing"),
        pytest.param("empty", "invalid_request", id="empty"),
        pytest.param("5000-chars", "invalid_request", id="5000-chars"),
        *(
            pytest.param(kind, "invalid_grant", id=kind)
            for kind in (
                "garbage",
                "prefix-only",
                "wrong-prefix",
                "no-prefix",
                "upper-cased",
                "too-short",
                "too-long-by-one",
                "padded",
                "surrounding-space",
                "nul",
                "unknown",
                "access-token",
                "non-ascii",
                "non-ascii-digits",
                "sql",
            )
        ),
    ],
)
async def test_hostile_refresh_token_values(
    client: httpx.AsyncClient, tokens: dict[str, Any], kind: str, error: str
) -> None:
    """Bad ``refresh_token`` values are 400 ``invalid_request`` or ``invalid_grant``,
    never a 500, and do not harm the real token."""
    value = hostile(kind, tokens)
    form = {"grant_type": "refresh_token"}
    if value is not None:
        form["refresh_token"] = value
    response = await client.post("/oauth/token", data=form)
    secrets = [tokens["refresh_token"], *([value] if value and len(value) > 8 else [])]
    assert_oauth_error(response, 400, error, *secrets)
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200


async def test_undecodable_refresh_token_is_invalid_grant(
    client: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    """A refresh token whose bytes are not UTF-8 is ``invalid_grant``, never a 500."""
    response = await client.post(
        "/oauth/token",
        content=b"grant_type=refresh_token&refresh_token=brt_%FF%FE" + b"A" * 41,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] in {"invalid_grant", "invalid_request"}
    assert_no_leak(response, tokens["refresh_token"])


# ------------------------------------------------------------------ concurrency

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
RACERS = 20


@pytest.mark.parametrize("backend", BACKENDS)
async def test_concurrent_refreshes_with_one_token_have_one_winner(
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    """20 simultaneous refreshes with one token, all past the store's ``find``
    before any ``spend``: exactly one 200, 19 ``invalid_grant``, one successor
    row, and the family stays alive (a client racing itself is no replay)."""
    async with (
        database_url_for(backend, make_settings) as url,
        running(make_settings(database_url=url), clock) as bastion,
        http_client(bastion) as http,
    ):
        await register(http, EMAIL)
        token = (await login(http, EMAIL))["refresh_token"]
        store = bastion.refresh_store
        real_find, real_spend = store.find, store.spend
        found_by = 0
        everyone_found = anyio.Event()
        spends: list[bool] = []

        async def find(token_hash: str) -> tuple[RefreshTokenRecord, Any] | None:
            nonlocal found_by
            found = await real_find(token_hash)
            found_by += 1
            if found_by == RACERS:
                everyone_found.set()
            with anyio.fail_after(10):
                await everyone_found.wait()  # nobody spends before all have read
            return found

        async def spend(token_hash: str, successor: RefreshTokenRecord, **kwargs: Any) -> bool:
            spent = await real_spend(token_hash, successor, **kwargs)
            spends.append(spent)
            return spent

        monkeypatch.setattr(store, "find", find)
        monkeypatch.setattr(store, "spend", spend)
        responses: list[httpx.Response] = [httpx.Response(0)] * RACERS

        async def one(i: int) -> None:
            responses[i] = await refresh(http, token)

        async with anyio.create_task_group() as group:
            for i in range(RACERS):
                group.start_soon(one, i)
        monkeypatch.setattr(store, "find", real_find)
        monkeypatch.setattr(store, "spend", real_spend)

        assert len(spends) == RACERS  # they really overlapped: all reached the store
        assert spends.count(True) == 1
        winners = [r for r in responses if r.status_code == 200]
        assert len(winners) == 1, [r.text for r in responses]
        for loser in (r for r in responses if r.status_code != 200):
            assert_oauth_error(loser, 400, "invalid_grant", token)
        successors = await rows(
            bastion,
            "SELECT token_hash FROM refresh_tokens WHERE parent_hash = :parent",
            parent=sha256(token),
        )
        assert successors == [(sha256(winners[0].json()["refresh_token"]),)]
        assert len(await rows(bastion, "SELECT token_hash FROM refresh_tokens")) == 2
        # The family survived the race: the winner's token works.
        assert (await refresh(http, winners[0].json()["refresh_token"])).status_code == 200


async def test_concurrent_refreshes_of_two_users_stay_apart(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """Refreshes of two users racing each other each get their own family's successor."""
    await register(client, BOB, BOB_PASSWORD)
    alice = (await login(client, registered["email"], registered["password"]))["refresh_token"]
    bob = (await login(client, BOB, BOB_PASSWORD))["refresh_token"]
    results: dict[str, httpx.Response] = {}

    async def go(name: str, token: str) -> None:
        results[name] = await refresh(client, token)

    async with anyio.create_task_group() as group:
        group.start_soon(go, "alice", alice)
        group.start_soon(go, "bob", bob)
    subjects = set()
    for response in results.values():
        assert response.status_code == 200, response.text
        me = await client.get(
            "/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"}
        )
        subjects.add(me.json()["email"])
    assert subjects == {registered["email"], BOB}
