"""``POST /me/password``: proving the current password, the policy on the new
one, and that a change ends every session and access token (strict mode),
while a refused change changes nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from bastion.clock import FrozenClock
from tests.http_checks import assert_oauth_error, assert_problem, bearer_challenge
from tests.token_flows import audit_events, bearer, login, me_status, refresh

pytestmark = pytest.mark.anyio

NEW_PASSWORD = "an entirely new and long passphrase"


@pytest.fixture
async def two_logins(client: httpx.AsyncClient, registered: dict[str, str]) -> list[dict[str, Any]]:
    """Two sessions of ``registered``: the token responses of two logins."""
    return [await login(client, registered["email"], registered["password"]) for _ in range(2)]


async def change(
    client: httpx.AsyncClient, access_token: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.post("/me/password", headers=bearer(access_token), json=body)


async def login_status(client: httpx.AsyncClient, email: str, password: str) -> int:
    response = await client.post(
        "/oauth/token", data={"grant_type": "password", "username": email, "password": password}
    )
    return response.status_code


async def assert_nothing_changed(
    client: httpx.AsyncClient, registered: dict[str, str], logins: list[dict[str, Any]]
) -> None:
    """The old password still logs in, the new one does not, every session and
    access token still works."""
    assert await login_status(client, registered["email"], registered["password"]) == 200
    assert await login_status(client, registered["email"], NEW_PASSWORD) == 400
    for tokens in logins:
        assert await me_status(client, tokens["access_token"]) == 200
        assert (await refresh(client, tokens["refresh_token"])).status_code == 200


async def test_change_password(
    client: httpx.AsyncClient,
    registered: dict[str, str],
    two_logins: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The right current password: 204; the old password stops logging in, the
    new one does; every session ends and every access token until now is 401;
    ``password.changed`` is audited without any password in it."""
    with caplog.at_level("INFO", logger="bastion.audit"):
        response = await change(
            client,
            two_logins[0]["access_token"],
            {"current_password": registered["password"], "new_password": NEW_PASSWORD},
        )
    assert response.status_code == 204, response.text
    assert response.content == b""

    assert await login_status(client, registered["email"], registered["password"]) == 400
    for tokens in two_logins:
        assert await me_status(client, tokens["access_token"]) == 401
        assert_oauth_error(await refresh(client, tokens["refresh_token"]), 400, "invalid_grant")

    [event] = audit_events(caplog, "password.changed")
    assert event["actor"] == registered["id"]
    [revoked] = audit_events(caplog, "sessions.revoked_all")
    assert revoked["reason"] == "password_changed"
    assert revoked["count"] == 2
    for secret in (registered["password"], NEW_PASSWORD):
        assert secret not in caplog.text
        assert json.dumps(secret) not in caplog.text


async def test_new_password_logs_in_after_the_change(
    client: httpx.AsyncClient,
    clock: FrozenClock,
    registered: dict[str, str],
    two_logins: list[dict[str, Any]],
) -> None:
    """A login with the new password (a moment later) gets working tokens."""
    response = await change(
        client,
        two_logins[0]["access_token"],
        {"current_password": registered["password"], "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 204, response.text
    clock.advance(0.001)
    fresh = await login(client, registered["email"], NEW_PASSWORD)
    assert await me_status(client, fresh["access_token"]) == 200
    assert (await refresh(client, fresh["refresh_token"])).status_code == 200


@pytest.mark.parametrize(
    "current",
    [
        pytest.param("not the password", id="wrong"),
        pytest.param("CORRECT HORSE BATTERY STAPLE", id="other-case"),
        pytest.param("correct horse battery staple ", id="trailing-space"),
        pytest.param("x" * 4096, id="4096-chars"),
    ],
)
async def test_wrong_current_password_is_403_and_changes_nothing(
    client: httpx.AsyncClient,
    registered: dict[str, str],
    two_logins: list[dict[str, Any]],
    current: str,
) -> None:
    """A wrong current password is a 403 problem (the token is fine, the proof
    is not), not a 401; password, sessions and tokens stay as they were."""
    response = await change(
        client,
        two_logins[0]["access_token"],
        {"current_password": current, "new_password": NEW_PASSWORD},
    )
    assert_problem(response, 403, current, NEW_PASSWORD, registered["password"])
    assert "www-authenticate" not in response.headers
    await assert_nothing_changed(client, registered, two_logins)


@pytest.mark.parametrize(
    ("new_password", "reason"),
    [
        pytest.param("football", "common", id="common"),
        pytest.param("shorty", "too_short", id="too_short"),
        pytest.param("alice likes long walks", "contains_email", id="contains_email"),
        pytest.param("x" * 129, "too_long", id="too_long"),
    ],
)
async def test_new_password_refused_by_policy_is_422_and_changes_nothing(
    client: httpx.AsyncClient,
    registered: dict[str, str],
    two_logins: list[dict[str, Any]],
    new_password: str,
    reason: str,
) -> None:
    """A new password the policy refuses is a 422 problem with its ``reason``;
    nothing changes."""
    response = await change(
        client,
        two_logins[0]["access_token"],
        {"current_password": registered["password"], "new_password": new_password},
    )
    body = assert_problem(response, 422, new_password, registered["password"])
    assert body["reason"] == reason
    await assert_nothing_changed(client, registered, two_logins)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"new_password": NEW_PASSWORD}, id="no-current"),
        pytest.param({"current_password": "correct horse battery staple"}, id="no-new"),
        pytest.param({}, id="empty-object"),
        pytest.param(
            {
                "current_password": "correct horse battery staple",
                "new_password": NEW_PASSWORD,
                "email": "mallory@example.com",
            },
            id="unknown-field",
        ),
        pytest.param(
            {"current_password": "correct horse battery staple", "new_password": ""}, id="empty-new"
        ),
        pytest.param(
            {"current_password": "correct horse battery staple", "new_password": 12345678},
            id="number",
        ),
        pytest.param(
            {"current_password": "correct horse battery staple", "new_password": "x" * 5000},
            id="5000-chars",
        ),
    ],
)
async def test_malformed_body_is_422_and_changes_nothing(
    client: httpx.AsyncClient,
    registered: dict[str, str],
    two_logins: list[dict[str, Any]],
    body: dict[str, Any],
) -> None:
    """Missing, unknown or malformed fields are a 422 problem that never echoes a password."""
    response = await change(client, two_logins[0]["access_token"], body)
    problem = assert_problem(response, 422, registered["password"], NEW_PASSWORD, "x" * 100)
    assert problem["errors"]
    await assert_nothing_changed(client, registered, two_logins)


async def test_change_password_needs_a_token(
    client: httpx.AsyncClient, registered: dict[str, str]
) -> None:
    """Without a bearer token: 401 with ``WWW-Authenticate: Bearer``; the password stays."""
    response = await client.post(
        "/me/password",
        json={"current_password": registered["password"], "new_password": NEW_PASSWORD},
    )
    assert_problem(response, 401, registered["password"], NEW_PASSWORD)
    assert bearer_challenge(response) == {}
    assert await login_status(client, registered["email"], registered["password"]) == 200
