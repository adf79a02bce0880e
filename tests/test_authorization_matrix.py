"""Who may call what: every kind of caller against every protected route of
the server, and the ``roles`` and ``scope`` claims the token endpoint hands
out (RFC 6749 §3.3: the requested scopes narrowed to the user's permissions).

Permissions come from the token's scope, so a 403 is always RFC 6750 §3.1
``insufficient_scope``; a caller without a token is 401, never 403 or 404."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bastion.clock import FrozenClock
from bastion.core import Bastion
from tests.admin_flows import (
    ADMIN_PERMISSIONS,
    CLOSURES,
    EDITOR_PERMISSIONS,
    USER_PERMISSIONS,
    account,
    assert_forbidden,
    assert_unauthorized,
    claims,
)
from tests.conftest import PASSWORD
from tests.http_checks import assert_oauth_error
from tests.token_flows import login, register

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    permission: str
    form: dict[str, str] | None = None
    json: dict[str, Any] | None = None


ROUTES: dict[str, Route] = {
    "GET /me": Route("GET", "/me", "profile"),
    "GET /admin/users": Route("GET", "/admin/users", "users:admin"),
    "POST /admin/users": Route(
        "POST",
        "/admin/users",
        "users:admin",
        json={"email": "made@example.com", "password": "a long and unusual passphrase"},
    ),
    "GET /admin/users/{id}": Route("GET", "/admin/users/{target}", "users:admin"),
    "GET /admin/roles": Route("GET", "/admin/roles", "roles:admin"),
    "GET /admin/audit": Route("GET", "/admin/audit", "audit:read"),
    "POST /admin/users/{id}/sessions/revoke": Route(
        "POST", "/admin/users/{target}/sessions/revoke", "sessions:admin"
    ),
    "POST /oauth/introspect": Route(
        "POST", "/oauth/introspect", "tokens:introspect", form={"token": "not-a-token"}
    ),
}

CUSTOM_ROLES = {
    "moderator": {"parents": ["user"], "permissions": ["content:*"]},
    "auditor": {"parents": [], "permissions": ["audit:read"]},
}
"""Roles made through the service: ``moderator`` holds no admin permission
at all; ``auditor`` holds exactly one, and not even ``profile``."""

ALLOWED: dict[str, set[str]] = {
    "user": {"GET /me"},
    "editor": {"GET /me"},
    "admin": set(ROUTES),
    "moderator": {"GET /me"},
    "auditor": {"GET /admin/audit"},
}
"""The routes each role may call; every other one is 403 for it."""

SUCCESS = {"POST /admin/users": 201}


async def call(
    client: httpx.AsyncClient, route: Route, target: str, headers: dict[str, str]
) -> httpx.Response:
    return await client.request(
        route.method,
        route.path.format(target=target),
        headers=headers,
        json=route.json,
        data=route.form,
    )


async def test_anonymous_caller_is_401_on_every_route(client: httpx.AsyncClient) -> None:
    """No token: 401 with a bare ``Bearer`` challenge everywhere (never 403 or 404)."""
    target = await register(client, "target@example.com")
    statuses = {}
    for name, route in ROUTES.items():
        response = await call(client, route, target, {})
        statuses[name] = response.status_code
        assert_unauthorized(response)
        assert response.headers["www-authenticate"] == "Bearer"
    assert statuses == dict.fromkeys(ROUTES, 401)


@pytest.mark.parametrize("role", list(ALLOWED))
async def test_role_route_matrix(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock, role: str
) -> None:
    """Each role gets 2xx on exactly its routes and a 403 ``insufficient_scope``
    naming the route's permission on the rest (never 401, 404 or 500)."""
    for name, spec in CUSTOM_ROLES.items():
        await bastion.authz.create_role(name, actor="test", **spec)
    target = await register(client, "target@example.com")
    caller = await account(client, bastion, clock, f"{role}@example.com", [role])
    expected = {name: (SUCCESS.get(name, 200) if name in ALLOWED[role] else 403) for name in ROUTES}
    actual = {}
    for name, route in ROUTES.items():
        response = await call(client, route, target, caller.headers)
        actual[name] = response.status_code
        if response.status_code == 403:
            assert_forbidden(response, route.permission)
    assert actual == expected


# ------------------------------------------------------------------ the claims


@pytest.mark.parametrize(
    ("role", "permissions"),
    [
        pytest.param("user", USER_PERMISSIONS, id="user"),
        pytest.param("editor", EDITOR_PERMISSIONS, id="editor"),
        pytest.param("admin", ADMIN_PERMISSIONS, id="admin"),
    ],
)
async def test_token_carries_role_closure_and_all_effective_permissions(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    role: str,
    permissions: list[str],
) -> None:
    """With no scope requested, ``roles`` is the closure of the user's role and
    ``scope`` every permission of that closure, in the token and the answer."""
    caller = await account(client, bastion, clock, "someone@example.com", [role])
    payload = claims(caller.access_token)
    assert payload["roles"] == CLOSURES[role]
    assert payload["scope"].split() == permissions
    again = await login(client, caller.email, caller.password)
    assert again["scope"].split() == permissions


async def test_default_roles_are_given_at_registration(
    client: httpx.AsyncClient, registered: dict[str, str], access_token: str
) -> None:
    """A self-registered account holds the default role ``user`` and nothing more."""
    payload = claims(access_token)
    assert payload["roles"] == ["user"]
    assert payload["scope"].split() == USER_PERMISSIONS


@pytest.mark.parametrize(
    ("role", "requested", "granted"),
    [
        pytest.param("user", "profile content:write", ["profile"], id="user-narrowed"),
        pytest.param("user", "email", ["email"], id="user-subset"),
        pytest.param("editor", "content:write users:admin", ["content:write"], id="editor"),
        pytest.param("admin", "users:admin", ["users:admin"], id="admin-one"),
        pytest.param("moderator", "content:write", ["content:write"], id="wildcard-grants"),
        pytest.param("moderator", "content:* profile", ["content:*", "profile"], id="wildcard"),
        pytest.param("editor", "content:write content:read", EDITOR_PERMISSIONS[:2], id="two"),
    ],
)
async def test_requested_scope_is_narrowed_to_effective_permissions(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    role: str,
    requested: str,
    granted: list[str],
) -> None:
    """RFC 6749 §3.3: the server grants the requested scopes the user's roles
    allow (``content:*`` allows ``content:write``) and silently drops the rest."""
    await bastion.authz.create_role("moderator", actor="test", **CUSTOM_ROLES["moderator"])
    caller = await account(client, bastion, clock, "someone@example.com", [role])
    body = await login(client, caller.email, caller.password, scope=requested)
    assert body["scope"].split() == granted
    payload = claims(body["access_token"])
    assert payload["scope"].split() == granted
    assert payload["roles"] == sorted({role, *CLOSURES.get(role, [role, "user"])})


@pytest.mark.parametrize(
    ("role", "requested"),
    [
        pytest.param("user", "content:write", id="user-editor-scope"),
        pytest.param("user", "users:admin roles:admin", id="user-admin-scopes"),
        pytest.param("editor", "content:*", id="wildcard-not-implied-by-actions"),
        pytest.param("editor", "content", id="bare-resource"),
        pytest.param("admin", "admin", id="role-name-is-not-a-scope"),
        pytest.param("admin", "users:*", id="wildcard-admin"),
    ],
)
async def test_request_with_nothing_grantable_is_invalid_scope(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    role: str,
    requested: str,
) -> None:
    """RFC 6749 §5.2: scopes requested and none of them allowed is ``invalid_scope``."""
    caller = await account(client, bastion, clock, "someone@example.com", [role])
    response = await client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "username": caller.email,
            "password": PASSWORD,
            "scope": requested,
        },
    )
    assert_oauth_error(response, 400, "invalid_scope", PASSWORD)
    assert "access_token" not in response.text
