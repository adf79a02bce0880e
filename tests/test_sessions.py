"""``/me/sessions``: one session per login (a refresh-token family), listed only
to its owner, ended one at a time or all at once ("sign out everywhere").
Another user's session answers 404 exactly like an unknown one (BOLA)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from bastion.clock import FrozenClock
from tests.http_checks import assert_oauth_error, assert_problem, bearer_challenge
from tests.token_flows import (
    BOB,
    BOB_PASSWORD,
    audit_events,
    bearer,
    login,
    me_status,
    refresh,
    register,
)

pytestmark = pytest.mark.anyio

SESSION_FIELDS = {
    "id",
    "client_id",
    "created_at",
    "last_used_at",
    "expires_at",
    "user_agent",
    "ip_address",
    "current",
}
LAPTOP = {"User-Agent": "Firefox on the laptop"}
PHONE = {"User-Agent": "Safari on the phone"}


async def sessions(client: httpx.AsyncClient, access_token: str) -> list[dict[str, Any]]:
    response = await client.get("/me/sessions", headers=bearer(access_token))
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_one_session_per_login_with_user_agent_and_ip(
    client: httpx.AsyncClient, clock: FrozenClock, registered: dict[str, str]
) -> None:
    """Each login is a session showing its user agent and IP, newest first, the
    caller's own marked ``current``; no token appears in the list."""
    laptop = await login(client, registered["email"], registered["password"], headers=LAPTOP)
    clock.advance(60)
    phone = await login(client, registered["email"], registered["password"], headers=PHONE)
    response = await client.get("/me/sessions", headers=bearer(phone["access_token"]))
    assert response.status_code == 200, response.text
    listed = response.json()
    assert [s["user_agent"] for s in listed] == [PHONE["User-Agent"], LAPTOP["User-Agent"]]
    for session in listed:
        assert set(session) == SESSION_FIELDS
        uuid.UUID(session["id"])
        assert session["client_id"] == "bastion"
        assert session["ip_address"] == "127.0.0.1"
        assert moment(session["expires_at"]) - moment(session["created_at"]) == timedelta(days=7)
    assert [s["current"] for s in listed] == [True, False]
    assert [s["current"] for s in await sessions(client, laptop["access_token"])] == [False, True]
    for secret in (laptop["refresh_token"], phone["refresh_token"], phone["access_token"]):
        assert secret not in response.text


async def test_refreshing_keeps_one_session_and_stamps_last_use(
    client: httpx.AsyncClient, clock: FrozenClock, registered: dict[str, str]
) -> None:
    """A refresh is the same session: ``last_used_at`` moves (and the user agent
    follows the client), ``created_at`` and ``expires_at`` do not."""
    first = await login(client, registered["email"], registered["password"], headers=LAPTOP)
    [before] = await sessions(client, first["access_token"])
    clock.advance(120)
    response = await refresh(client, first["refresh_token"], headers=PHONE)
    assert response.status_code == 200, response.text
    [after] = await sessions(client, response.json()["access_token"])
    assert after["id"] == before["id"]
    assert after["current"] is True  # the new access token names the same session
    assert after["created_at"] == before["created_at"]
    assert after["expires_at"] == before["expires_at"]
    assert moment(after["last_used_at"]) - moment(before["last_used_at"]) == timedelta(seconds=120)
    assert after["user_agent"] == PHONE["User-Agent"]


async def test_end_one_session(
    client: httpx.AsyncClient, registered: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """DELETE answers 204; that session's refresh token stops working and it
    leaves the list; the caller's other session is untouched."""
    laptop = await login(client, registered["email"], registered["password"], headers=LAPTOP)
    phone = await login(client, registered["email"], registered["password"], headers=PHONE)
    listed = await sessions(client, laptop["access_token"])
    phone_id = next(s["id"] for s in listed if s["user_agent"] == PHONE["User-Agent"])
    with caplog.at_level("INFO", logger="bastion.audit"):
        response = await client.delete(
            f"/me/sessions/{phone_id}", headers=bearer(laptop["access_token"])
        )
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_oauth_error(await refresh(client, phone["refresh_token"]), 400, "invalid_grant")
    remaining = await sessions(client, laptop["access_token"])
    assert [s["user_agent"] for s in remaining] == [LAPTOP["User-Agent"]]
    assert (await refresh(client, laptop["refresh_token"])).status_code == 200
    [event] = audit_events(caplog, "session.ended")
    assert event["target"] == phone_id
    again = await client.delete(f"/me/sessions/{phone_id}", headers=bearer(laptop["access_token"]))
    assert again.status_code == 204  # ending an ended session of one's own is harmless


async def test_another_users_session_is_404_like_an_unknown_one(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """Alice cannot end Bob's session: 404, byte for byte the answer for an
    unknown id (no oracle), and Bob's session keeps working."""
    alice = await login(client, registered["email"], registered["password"])
    await register(client, BOB, BOB_PASSWORD)
    bob = await login(client, BOB, BOB_PASSWORD)
    [bob_session] = await sessions(client, bob["access_token"])

    foreign = await client.delete(
        f"/me/sessions/{bob_session['id']}", headers=bearer(alice["access_token"])
    )
    unknown = await client.delete(
        f"/me/sessions/{uuid.uuid4()}", headers=bearer(alice["access_token"])
    )
    assert_problem(foreign, 404, bob["refresh_token"])
    assert_problem(unknown, 404)
    assert foreign.content == unknown.content
    assert bob_session["id"] not in foreign.text
    assert (await refresh(client, bob["refresh_token"])).status_code == 200
    assert [s["id"] for s in await sessions(client, bob["access_token"])] == [bob_session["id"]]


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("not-a-uuid", id="word"),
        pytest.param("123", id="number"),
        pytest.param("' OR 1=1 --", id="sql"),
        pytest.param(str(uuid.uuid4())[:-1], id="uuid-short-by-one"),
    ],
)
async def test_non_uuid_session_id_is_422(
    client: httpx.AsyncClient, registered: dict[str, str], path: str
) -> None:
    """A path that is not a UUID is a 422 problem, not a 404 or 500."""
    access = (await login(client, registered["email"], registered["password"]))["access_token"]
    response = await client.delete(f"/me/sessions/{path}", headers=bearer(access))
    body = assert_problem(response, 422)
    assert body["errors"][0]["loc"] == ["path", "session_id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", "/me/sessions", id="list"),
        pytest.param("DELETE", f"/me/sessions/{uuid.uuid4()}", id="end-one"),
        pytest.param("POST", "/me/sessions/revoke-all", id="revoke-all"),
    ],
)
async def test_sessions_need_a_token(client: httpx.AsyncClient, method: str, path: str) -> None:
    """Every session route is 401 with ``WWW-Authenticate: Bearer`` without a token."""
    response = await client.request(method, path)
    assert_problem(response, 401)
    assert bearer_challenge(response) == {}


async def test_sign_out_everywhere(
    client: httpx.AsyncClient,
    clock: FrozenClock,
    registered: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``revoke-all`` answers how many sessions ended; every refresh token and
    every access token issued until then is dead (strict mode), while a login
    a millisecond later works."""
    await register(client, BOB, BOB_PASSWORD)
    bob = await login(client, BOB, BOB_PASSWORD)
    logins = [await login(client, registered["email"], registered["password"]) for _ in range(3)]
    rotated = (await refresh(client, logins[0]["refresh_token"])).json()
    accesses = [t["access_token"] for t in logins] + [rotated["access_token"]]
    for access in accesses:
        assert await me_status(client, access) == 200

    with caplog.at_level("INFO", logger="bastion.audit"):
        response = await client.post("/me/sessions/revoke-all", headers=bearer(accesses[1]))
    assert response.status_code == 200, response.text
    assert response.json() == {"revoked": 3}
    for access in accesses:
        assert await me_status(client, access) == 401
    for refresh_token in [t["refresh_token"] for t in logins[1:]] + [rotated["refresh_token"]]:
        assert_oauth_error(await refresh(client, refresh_token), 400, "invalid_grant")
    [event] = audit_events(caplog, "sessions.revoked_all")
    assert event["target"] == registered["id"]
    assert event["count"] == 3
    assert event["reason"] == "user_request"

    clock.advance(0.001)
    fresh = await login(client, registered["email"], registered["password"])
    assert await me_status(client, fresh["access_token"]) == 200
    assert len(await sessions(client, fresh["access_token"])) == 1
    assert (await refresh(client, fresh["refresh_token"])).status_code == 200
    # Bob was not signed out.
    assert await me_status(client, bob["access_token"]) == 200
    assert (await refresh(client, bob["refresh_token"])).status_code == 200

    again = await client.post("/me/sessions/revoke-all", headers=bearer(fresh["access_token"]))
    assert again.json() == {"revoked": 1}


async def test_users_never_see_each_others_sessions(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """Each user's list holds their own sessions only."""
    await register(client, BOB, BOB_PASSWORD)
    alice = [
        await login(client, registered["email"], registered["password"], headers=LAPTOP)
        for _ in range(2)
    ]
    bob = await login(client, BOB, BOB_PASSWORD, headers=PHONE)
    alice_list = await sessions(client, alice[0]["access_token"])
    bob_list = await sessions(client, bob["access_token"])
    assert len(alice_list) == 2
    assert len(bob_list) == 1
    assert {s["id"] for s in alice_list}.isdisjoint(s["id"] for s in bob_list)
    assert {s["user_agent"] for s in alice_list} == {LAPTOP["User-Agent"]}
    assert {s["user_agent"] for s in bob_list} == {PHONE["User-Agent"]}
