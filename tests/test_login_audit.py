"""Logins and refreshes are audit events; what a caller typed is never in them."""

from __future__ import annotations

import httpx
import pytest

from bastion.core import Bastion

pytestmark = pytest.mark.anyio


async def _events(bastion: Bastion, action: str) -> list[dict[str, object]]:
    page = await bastion.audit.page(limit=50, action=action)
    return [
        {"actor": e.actor, "target": e.target, "request_id": e.request_id, **e.details}
        for e in page.events
    ]


async def test_successful_login_and_refresh_are_recorded(
    client: httpx.AsyncClient, bastion: Bastion, registered: dict[str, str]
) -> None:
    """login.succeeded and token.refreshed name the user, the session and the request."""
    login = await client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "username": registered["email"],
            "password": registered["password"],
        },
        headers={"X-Request-ID": "login-req-1"},
    )
    assert login.status_code == 200
    [event] = await _events(bastion, "login.succeeded")
    assert event["actor"] == registered["id"]
    assert event["request_id"] == "login-req-1"
    assert event["client_id"] == "bastion"
    refreshed = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": login.json()["refresh_token"]},
    )
    assert refreshed.status_code == 200
    [event] = await _events(bastion, "token.refreshed")
    assert event["actor"] == registered["id"]
    assert event["target"] == (await _events(bastion, "login.succeeded"))[0]["target"]


@pytest.mark.parametrize(
    "username",
    ["nobody@example.com", "correct horse battery staple typed as username"],
    ids=["unknown-account", "password-in-username-field"],
)
async def test_failed_login_records_a_digest_not_the_username(
    client: httpx.AsyncClient, bastion: Bastion, username: str
) -> None:
    """login.failed carries the account's digest, so a password typed into the
    username field never reaches the audit log."""
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": username, "password": "wrong password 123"},
    )
    assert response.status_code == 400
    [event] = await _events(bastion, "login.failed")
    assert event["actor"] is None
    assert username not in repr(event)
    assert str(event["account"]).startswith("account:")
