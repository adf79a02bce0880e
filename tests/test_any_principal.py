"""``any_principal`` and the session guard as an application uses them:
one Principal whatever the credential, a fixed precedence with no fall-through,
scopes, roles and permissions, and OpenAPI listing each scheme."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bastion.core import Bastion
from bastion.server.app import create_app
from tests.conftest import PASSWORD
from tests.http_checks import assert_problem, bearer_challenge
from tests.session_flows import (
    SessionLogin,
    cookie_header,
    probe_client,
    probe_router,
    session_login,
)
from tests.token_flows import bearer

pytestmark = pytest.mark.anyio


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
async def probe(bastion: Bastion, calls: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    async with probe_client(bastion, calls) as http:
        yield http


@pytest.fixture
async def login(client: httpx.AsyncClient, registered: dict[str, str]) -> SessionLogin:
    return await session_login(client, registered["email"], registered["password"])


@pytest.fixture
async def api_key(bastion: Bastion, registered: dict[str, str]) -> str:
    from tests.secrets_in_logs import register

    key = (await bastion.api_keys.create(uuid.UUID(registered["id"]), "ci", ["profile"])).key
    register(key)
    return key


def key_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


# ------------------------------------------------------------------ one Principal


async def test_a_session_gives_the_users_principal(
    probe: httpx.AsyncClient, login: SessionLogin, registered: dict[str, str], bastion: Bastion
) -> None:
    """auth_method=session, the user id, effective permissions and sorted roles,
    the first-party client, no claims or token id, the session's public id."""
    response = await probe.get("/probe/any", headers=cookie_header(login.cookie))
    assert response.status_code == 200, response.text
    body = response.json()
    session_id = (await probe.get("/auth/session", headers=cookie_header(login.cookie))).json()[
        "session_id"
    ]
    assert body == {
        "auth_method": "session",
        "subject": registered["id"],
        "scopes": ["email", "profile"],
        "roles": ["user"],
        "client_id": "bastion",
        "claims": False,
        "token_id": None,
        "session_id": session_id,
    }


async def test_roles_come_from_the_hierarchy_and_count_at_once(
    probe: httpx.AsyncClient, login: SessionLogin, registered: dict[str, str], bastion: Bastion
) -> None:
    """An admin's session carries the role closure; a role taken away counts on the next request."""
    user_id = uuid.UUID(registered["id"])
    await bastion.authz.set_user_roles(user_id, {"admin"}, actor="test")
    roles = (await probe.get("/probe/any", headers=cookie_header(login.cookie))).json()["roles"]
    assert roles == ["admin", "editor", "user"]
    assert (await probe.get("/probe/any/admin", headers=cookie_header(login.cookie))).is_success
    await bastion.authz.set_user_roles(user_id, {"user"}, actor="test")
    response = await probe.get("/probe/any/admin", headers=cookie_header(login.cookie))
    assert_problem(response, 403)


@pytest.mark.parametrize("credential", ["bearer", "api_key", "session"])
async def test_each_credential_alone_is_accepted(
    probe: httpx.AsyncClient,
    login: SessionLogin,
    access_token: str,
    api_key: str,
    registered: dict[str, str],
    credential: str,
) -> None:
    """Bearer, API key or cookie: the same subject, auth_method says which."""
    headers = {
        "bearer": bearer(access_token),
        "api_key": key_header(api_key),
        "session": cookie_header(login.cookie),
    }[credential]
    response = await probe.get("/probe/any", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["auth_method"] == credential
    assert response.json()["subject"] == registered["id"]


# ------------------------------------------------------------------ precedence


@pytest.mark.parametrize(
    ("sent", "winner"),
    [
        (("bearer", "api_key", "session"), "bearer"),
        (("bearer", "session"), "bearer"),
        (("bearer", "api_key"), "bearer"),
        (("api_key", "session"), "api_key"),
    ],
)
async def test_the_authorization_header_wins_then_the_api_key_then_the_cookie(
    probe: httpx.AsyncClient,
    login: SessionLogin,
    access_token: str,
    api_key: str,
    sent: tuple[str, ...],
    winner: str,
) -> None:
    """Several credentials at once: the first in the fixed order decides."""
    headers: dict[str, str] = {}
    if "bearer" in sent:
        headers.update(bearer(access_token))
    if "api_key" in sent:
        headers.update(key_header(api_key))
    if "session" in sent:
        headers.update(cookie_header(login.cookie))
    response = await probe.get("/probe/any", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["auth_method"] == winner


@pytest.mark.parametrize(
    ("bad", "challenge"),
    [
        ({"Authorization": "Bearer not-a-token"}, "Bearer"),
        ({"Authorization": "Bearer "}, "Bearer"),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "Bearer"),
        ({"Authorization": ""}, "Bearer"),
        ({"X-API-Key": "bst_nope_nope"}, "ApiKey"),
        ({"X-API-Key": ""}, "ApiKey"),
    ],
    ids=["bad-bearer", "empty-bearer", "basic", "empty-authorization", "bad-key", "empty-key"],
)
async def test_a_bad_credential_never_falls_through_to_a_good_one(
    probe: httpx.AsyncClient,
    login: SessionLogin,
    api_key: str,
    bad: dict[str, str],
    challenge: str,
) -> None:
    """A present but bad credential is 401 even when a good cookie (or key) rides along."""
    headers = {**cookie_header(login.cookie), **bad}
    if "Authorization" in bad:
        headers.update(key_header(api_key))
    response = await probe.get("/probe/any", headers=headers)
    assert_problem(response, 401, login.cookie, api_key)
    assert response.headers["www-authenticate"].startswith(challenge)


async def test_a_dead_cookie_is_401_not_anonymous(
    probe: httpx.AsyncClient, login: SessionLogin, client: httpx.AsyncClient
) -> None:
    """A cookie that no longer names a session: 401, also for the optional form."""
    assert (await client.delete("/auth/session", headers=login.headers())).status_code == 204
    for path in ("/probe/any", "/probe/any/optional"):
        response = await probe.get(path, headers=cookie_header(login.cookie))
        assert_problem(response, 401)


async def test_nothing_sent_is_401_with_a_bearer_challenge_or_none_when_optional(
    probe: httpx.AsyncClient,
) -> None:
    """No credential: 401 (RFC 6750 challenge); the optional dependency gives None."""
    response = await probe.get("/probe/any")
    assert_problem(response, 401)
    assert bearer_challenge(response) == {}
    optional = await probe.get("/probe/any/optional")
    assert optional.status_code == 200
    assert optional.json() == {"auth_method": None}


# ------------------------------------------------------------------ scopes, roles, permissions


@pytest.mark.parametrize("credential", ["bearer", "api_key", "session"])
async def test_scopes_are_checked_exactly_for_every_credential(
    probe: httpx.AsyncClient,
    login: SessionLogin,
    access_token: str,
    api_key: str,
    credential: str,
) -> None:
    """Security(any_principal, scopes=[...]): granted passes, missing is 403 insufficient_scope."""
    headers = {
        "bearer": bearer(access_token),
        "api_key": key_header(api_key),
        "session": cookie_header(login.cookie),
    }[credential]
    assert (await probe.get("/probe/any/profile", headers=headers)).status_code == 200
    denied = await probe.get("/probe/any/admin", headers=headers)
    assert_problem(denied, 403)
    assert bearer_challenge(denied)["error"] == "insufficient_scope"


@pytest.mark.parametrize(
    ("credential", "role_status", "permission_status"),
    [("bearer", 200, 200), ("session", 200, 200), ("api_key", 403, 403)],
)
async def test_roles_and_permissions_over_any_credential(
    probe: httpx.AsyncClient,
    login: SessionLogin,
    access_token: str,
    api_key: str,
    credential: str,
    role_status: int,
    permission_status: int,
) -> None:
    """require_roles admits tokens and sessions (API keys carry no roles);
    require_permissions needs every permission (the key holds only "profile")."""
    headers = {
        "bearer": bearer(access_token),
        "api_key": key_header(api_key),
        "session": cookie_header(login.cookie),
    }[credential]
    assert (await probe.get("/probe/any/role-user", headers=headers)).status_code == role_status
    assert (await probe.get("/probe/any/role-admin", headers=headers)).status_code == 403
    response = await probe.get("/probe/any/permission", headers=headers)
    assert response.status_code == permission_status


async def test_the_session_guard_checks_scopes_too(
    probe: httpx.AsyncClient, login: SessionLogin
) -> None:
    """Security(session_principal, scopes=[...]): the user's permissions decide."""
    headers = cookie_header(login.cookie)
    assert (await probe.get("/probe/session/profile", headers=headers)).status_code == 200
    assert_problem(await probe.get("/probe/session/admin", headers=headers), 403)


async def test_the_session_guard_refuses_other_credentials(
    probe: httpx.AsyncClient, access_token: str
) -> None:
    """The session guard alone takes only the cookie: a bearer token is no session."""
    response = await probe.get("/probe/session", headers=bearer(access_token))
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Cookie ")


async def test_an_unsafe_any_principal_request_by_cookie_needs_csrf(
    probe: httpx.AsyncClient, login: SessionLogin, calls: list[str]
) -> None:
    """Through any_principal too, a cookie POST needs its token; with it, it runs."""
    refused = await probe.post("/probe/any", headers=login.headers(csrf=False))
    assert_problem(refused, 403)
    assert (await probe.post("/probe/any", headers=login.headers())).status_code == 200
    assert calls == ["any POST"]


# ------------------------------------------------------------------ OpenAPI


def operation(document: dict[str, Any], path: str, method: str = "get") -> dict[str, Any]:
    op: dict[str, Any] = document["paths"][path][method]
    return op


async def test_openapi_lists_each_scheme_as_an_alternative(bastion: Bastion) -> None:
    """The operation's security is one requirement per scheme (any one suffices),
    each with the route's scopes; the components describe the cookie and the key."""
    app = create_app(bastion=bastion)
    app.include_router(probe_router(bastion, []))
    document = app.openapi()
    assert operation(document, "/probe/any")["security"] == [
        {"bastion": []},
        {"bastion_api_key": []},
        {"bastion_session": []},
    ]
    assert operation(document, "/probe/any/profile")["security"] == [
        {"bastion": ["profile"]},
        {"bastion_api_key": ["profile"]},
        {"bastion_session": ["profile"]},
    ]
    assert operation(document, "/probe/session")["security"] == [{"bastion_session": []}]
    schemes = document["components"]["securitySchemes"]
    assert schemes["bastion_session"]["type"] == "apiKey"
    assert schemes["bastion_session"]["in"] == "cookie"
    assert schemes["bastion_session"]["name"] == "__Host-bastion_session"
    assert schemes["bastion_api_key"]["in"] == "header"
    assert schemes["bastion"]["type"] == "oauth2"


async def test_the_session_routes_document_the_cookie(bastion: Bastion) -> None:
    """GET and DELETE /auth/session name the session scheme; the login takes JSON or a form."""
    document = create_app(bastion=bastion).openapi()
    assert operation(document, "/auth/session")["security"] == [{"bastion_session": []}]
    assert operation(document, "/auth/session", "delete")["security"] == [{"bastion_session": []}]
    login = operation(document, "/auth/session", "post")
    assert "security" not in login
    assert set(login["requestBody"]["content"]) == {
        "application/json",
        "application/x-www-form-urlencoded",
    }
    schema = login["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"email", "password"}


async def test_disabled_users_are_refused_by_every_credential(
    probe: httpx.AsyncClient,
    client: httpx.AsyncClient,
    registered: dict[str, str],
    bastion: Bastion,
) -> None:
    """Disabled through the admin path: the session and API key stop at once."""
    login = await session_login(client, registered["email"], PASSWORD)
    key = (await bastion.api_keys.create(uuid.UUID(registered["id"]), "ci", ["profile"])).key
    user_id = uuid.UUID(registered["id"])
    await bastion.users.set_active(user_id, False, now=bastion.clock.now())
    await bastion.revocations.revoke_everything(user_id, reason="user_disabled")
    assert_problem(await probe.get("/probe/any", headers=cookie_header(login.cookie)), 401)
    assert_problem(await probe.get("/probe/any", headers=key_header(key)), 401)
