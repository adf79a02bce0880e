"""API keys over HTTP and through the service: ``/me/api-keys`` (create, list,
revoke, rotate), the admin's routes, the audit trail, the permission ceiling
(a key never carries more than its owner holds now), ``last_used_at``
coalescing and housekeeping."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest

from bastion.api_keys import narrowed
from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.errors import InvalidApiKey
from bastion.settings import Settings
from tests.admin_flows import Account, account, admin_account, shared_server
from tests.http_checks import assert_problem, bearer_challenge
from tests.secrets_in_logs import register
from tests.token_flows import (
    BOB,
    BOB_PASSWORD,
    audit_events,
    bearer,
    http_client,
    login,
    rows,
    running,
)
from tests.token_flows import register as register_user

pytestmark = pytest.mark.anyio

KEY_SHAPE = re.compile(r"bst_([0-9a-f]{16})_[A-Za-z0-9_-]{43}")
LISTED_FIELDS = {"id", "prefix", "name", "permissions", "created_at", "last_used_at", "expires_at"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def shared(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """One server and a user's access token for the tables of refused
    requests, which must change nothing."""
    async with shared_server(tmp_path_factory.mktemp("api-keys")) as server:
        user = await account(server.client, server.bastion, server.clock, "table@example.com")
        yield server.client, user.access_token


async def create(client: httpx.AsyncClient, token: str, **body: Any) -> dict[str, Any]:
    """A successful ``POST /me/api-keys``; returns the body (the key registered
    with the secrets-in-logs check)."""
    body.setdefault("name", "deploy script")
    body.setdefault("permissions", ["profile"])
    response = await client.post("/me/api-keys", json=body, headers=bearer(token))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    register(created["key"])
    return created


async def listed(client: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    response = await client.get("/me/api-keys", headers=bearer(token))
    assert response.status_code == 200, response.text
    keys: list[dict[str, Any]] = response.json()
    return keys


# ------------------------------------------------------------------ create and list


async def test_the_key_is_shown_once_and_only_its_hash_is_stored(
    client: httpx.AsyncClient, bastion: Bastion, access_token: str
) -> None:
    """201 with the whole key and ``no-store``; the list shows the prefix only;
    the database holds the SHA-256 of the secret, never the secret."""
    response = await client.post(
        "/me/api-keys",
        json={"name": "  deploy script ", "permissions": ["profile", "email"]},
        headers=bearer(access_token),
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    key = body["key"]
    register(key)
    match = KEY_SHAPE.fullmatch(key)
    assert match is not None
    assert body["id"] == match.group(1)
    assert body["prefix"] == f"bst_{body['id']}"
    assert body["name"] == "deploy script"
    assert body["permissions"] == ["email", "profile"]
    assert body["last_used_at"] is None
    assert body["expires_at"] is None

    response = await client.get("/me/api-keys", headers=bearer(access_token))
    assert key not in response.text
    [item] = response.json()
    assert set(item) == LISTED_FIELDS
    assert item["id"] == body["id"]

    secret = key.split("_", 2)[2]
    [(stored_hash,)] = await rows(
        bastion, "SELECT secret_hash FROM api_keys WHERE key_id = :id", id=body["id"]
    )
    assert stored_hash == hashlib.sha256(secret.encode()).hexdigest()
    dump = await rows(bastion, "SELECT * FROM api_keys")
    assert all(secret not in str(value) for value in dump[0])


async def test_list_is_newest_first_without_revoked_keys(
    client: httpx.AsyncClient, clock: FrozenClock, access_token: str
) -> None:
    """Newest first; a revoked key leaves the list."""
    first = await create(client, access_token, name="first")
    clock.advance(1)
    second = await create(client, access_token, name="second")
    clock.advance(1)
    third = await create(client, access_token, name="third")
    assert [k["id"] for k in await listed(client, access_token)] == [
        third["id"],
        second["id"],
        first["id"],
    ]
    await client.delete(f"/me/api-keys/{second['id']}", headers=bearer(access_token))
    assert [k["id"] for k in await listed(client, access_token)] == [third["id"], first["id"]]


async def test_expiry_in_days_or_as_a_moment(
    client: httpx.AsyncClient, clock: FrozenClock, access_token: str
) -> None:
    """``expires_in_days`` counts from now; ``expires_at`` is kept as given."""
    in_days = await create(client, access_token, expires_in_days=30)
    assert in_days["expires_at"].startswith((clock.now() + timedelta(days=30)).date().isoformat())
    moment = await create(client, access_token, expires_at="2030-03-01T12:00:00+02:00")
    assert moment["expires_at"] in ("2030-03-01T10:00:00Z", "2030-03-01T10:00:00+00:00")


BAD_BODIES: dict[str, Any] = {
    "unknown field": {"name": "k", "permissions": ["profile"], "user_id": "x"},
    "missing name": {"permissions": ["profile"]},
    "missing permissions": {"name": "k"},
    "no permissions": {"name": "k", "permissions": []},
    "too many permissions": {"name": "k", "permissions": [f"p{i}" for i in range(65)]},
    "permissions as a string": {"name": "k", "permissions": "profile"},
    "a permission not a string": {"name": "k", "permissions": [7]},
    "a malformed permission": {"name": "k", "permissions": ["a b"]},
    "a bare wildcard": {"name": "k", "permissions": ["*"]},
    "three parts": {"name": "k", "permissions": ["a:b:c"]},
    "a huge permission": {"name": "k", "permissions": ["p" * 129]},
    "empty name": {"name": "", "permissions": ["profile"]},
    "blank name": {"name": "   ", "permissions": ["profile"]},
    "long name": {"name": "n" * 101, "permissions": ["profile"]},
    "huge name": {"name": "n" * 5000, "permissions": ["profile"]},
    "name with NUL": {"name": "bad\x00name", "permissions": ["profile"]},
    "name with a tab": {"name": "bad\tname", "permissions": ["profile"]},
    "name with bidi override": {"name": "\u202egnp.exe", "permissions": ["profile"]},
    "name not a string": {"name": 5, "permissions": ["profile"]},
    "naive expiry": {"name": "k", "permissions": ["profile"], "expires_at": "2030-06-01T00:00:00"},
    "past expiry": {"name": "k", "permissions": ["profile"], "expires_at": "2029-12-31T00:00:00Z"},
    "expiry now": {"name": "k", "permissions": ["profile"], "expires_at": "2030-01-01T00:00:00Z"},
    "expiry beyond the maximum": {
        "name": "k",
        "permissions": ["profile"],
        "expires_at": "2031-06-01T00:00:00Z",
    },
    "expiry not a date": {"name": "k", "permissions": ["profile"], "expires_at": "tomorrow"},
    "zero days": {"name": "k", "permissions": ["profile"], "expires_in_days": 0},
    "negative days": {"name": "k", "permissions": ["profile"], "expires_in_days": -1},
    "days beyond the maximum": {"name": "k", "permissions": ["profile"], "expires_in_days": 366},
    "fractional days": {"name": "k", "permissions": ["profile"], "expires_in_days": 1.5},
    "both expiries": {
        "name": "k",
        "permissions": ["profile"],
        "expires_at": "2030-06-01T00:00:00Z",
        "expires_in_days": 10,
    },
    "a list body": [{"name": "k", "permissions": ["profile"]}],
    "null body": None,
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_create_bodies_are_422_and_create_nothing(
    shared: tuple[httpx.AsyncClient, str], body: Any
) -> None:
    """Each refused body answers 422 problem details and leaves no key."""
    client, access_token = shared
    response = await client.post("/me/api-keys", json=body, headers=bearer(access_token))
    assert_problem(response, 422)
    assert await listed(client, access_token) == []


async def test_a_body_that_is_not_json_is_refused(shared: tuple[httpx.AsyncClient, str]) -> None:
    """Garbage instead of JSON: 422, no key."""
    client, access_token = shared
    response = await client.post(
        "/me/api-keys",
        content=b"name=k&permissions=profile",
        headers={**bearer(access_token), "Content-Type": "application/json"},
    )
    assert_problem(response, 422)
    assert await listed(client, access_token) == []


BEYOND = {
    "an admin permission": ["users:admin"],
    "one of several": ["profile", "content:write"],
    "a wildcard over a held word": ["profile:*"],
    "a wildcard of another resource": ["content:*"],
}


@pytest.mark.parametrize("permissions", BEYOND.values(), ids=BEYOND.keys())
async def test_permissions_beyond_the_owners_are_403(
    shared: tuple[httpx.AsyncClient, str], permissions: list[str]
) -> None:
    """A key cannot carry a permission its owner does not hold now: 403, no key."""
    client, access_token = shared
    response = await client.post(
        "/me/api-keys",
        json={"name": "k", "permissions": permissions},
        headers=bearer(access_token),
    )
    assert_problem(response, 403)
    assert await listed(client, access_token) == []


async def test_the_per_user_cap_is_409(
    make_settings: Callable[..., Settings], clock: FrozenClock
) -> None:
    """``BASTION_API_KEY_MAX_PER_USER`` live keys at most; revoking one frees a place."""
    async with (
        running(make_settings(api_key_max_per_user=2), clock) as instance,
        http_client(instance) as http,
    ):
        await register_user(http, BOB, BOB_PASSWORD)
        token = (await login(http, BOB, BOB_PASSWORD))["access_token"]
        first = await create(http, token)
        await create(http, token)
        response = await http.post(
            "/me/api-keys", json={"name": "k", "permissions": ["profile"]}, headers=bearer(token)
        )
        assert_problem(response, 409)
        await http.delete(f"/me/api-keys/{first['id']}", headers=bearer(token))
        await create(http, token)


async def test_an_expiry_can_be_required(
    make_settings: Callable[..., Settings], clock: FrozenClock
) -> None:
    """``BASTION_API_KEY_REQUIRE_EXPIRY``: a key without an expiry is 422."""
    async with (
        running(make_settings(api_key_require_expiry=True), clock) as instance,
        http_client(instance) as http,
    ):
        await register_user(http, BOB, BOB_PASSWORD)
        token = (await login(http, BOB, BOB_PASSWORD))["access_token"]
        response = await http.post(
            "/me/api-keys", json={"name": "k", "permissions": ["profile"]}, headers=bearer(token)
        )
        assert_problem(response, 422)
        await create(http, token, expires_in_days=7)


# ------------------------------------------------------------------ who may manage keys


async def test_key_routes_need_a_bearer_token(client: httpx.AsyncClient, access_token: str) -> None:
    """No token is a 401 with a Bearer challenge; an API key cannot manage
    keys, neither in its own header nor posing as a bearer token."""
    created = await create(client, access_token)
    for headers in ({}, {"X-API-Key": created["key"]}, bearer(created["key"])):
        for method, path in (
            ("GET", "/me/api-keys"),
            ("POST", "/me/api-keys"),
            ("DELETE", f"/me/api-keys/{created['id']}"),
            ("POST", f"/me/api-keys/{created['id']}/rotate"),
        ):
            json = {"name": "k", "permissions": ["profile"]} if method == "POST" else None
            response = await client.request(method, path, headers=headers, json=json)
            assert_problem(response, 401, created["key"])
            bearer_challenge(response)
    assert len(await listed(client, access_token)) == 1


async def test_another_users_key_is_404_for_delete_and_rotate(
    client: httpx.AsyncClient, bastion: Bastion, access_token: str
) -> None:
    """BOLA: Bob's key id answers exactly like an unknown one, and keeps working."""
    await register_user(client, BOB, BOB_PASSWORD)
    bob_token = (await login(client, BOB, BOB_PASSWORD))["access_token"]
    bobs = await create(client, bob_token)
    unknown = "0123456789abcdef"
    for key_id in (bobs["id"], unknown):
        deleted = await client.delete(f"/me/api-keys/{key_id}", headers=bearer(access_token))
        rotated = await client.post(f"/me/api-keys/{key_id}/rotate", headers=bearer(access_token))
        for response in (deleted, rotated):
            assert assert_problem(response, 404)["detail"] == "No such API key."
    principal = await bastion.api_keys.authenticate(bobs["key"])
    assert principal.token_id == bobs["id"]


BAD_IDS = {
    "not hex": ("zzzzzzzzzzzzzzzz", 404),
    "upper case": ("0123456789ABCDEF", 404),
    "too short": ("0123", 404),
    "the prefix": ("bst_0123456789abcdef", 404),
    "a NUL": ("0123456789abcde%00", 404),
    "too long": ("a" * 65, 422),
}


@pytest.mark.parametrize(("key_id", "status"), BAD_IDS.values(), ids=BAD_IDS.keys())
async def test_malformed_ids_in_the_path_are_refused(
    shared: tuple[httpx.AsyncClient, str], key_id: str, status: int
) -> None:
    """A malformed id is simply no such key (a huge one is refused as input)."""
    client, access_token = shared
    for response in (
        await client.delete(f"/me/api-keys/{key_id}", headers=bearer(access_token)),
        await client.post(f"/me/api-keys/{key_id}/rotate", headers=bearer(access_token)),
    ):
        assert_problem(response, status)


async def test_revoke_is_204_then_404(
    client: httpx.AsyncClient, bastion: Bastion, access_token: str
) -> None:
    """Revoking answers 204 and the key stops working; a second time it is 404."""
    created = await create(client, access_token)
    path = f"/me/api-keys/{created['id']}"
    assert (await client.delete(path, headers=bearer(access_token))).status_code == 204
    assert_problem(await client.delete(path, headers=bearer(access_token)), 404)
    with pytest.raises(InvalidApiKey):
        await bastion.api_keys.authenticate(created["key"])


# ------------------------------------------------------------------ rotation


async def test_rotation_keeps_name_permissions_and_expiry(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock, access_token: str
) -> None:
    """The successor has a new id and secret and the same name, permissions
    and expiry; the old key stops working in the same step."""
    old = await create(client, access_token, permissions=["email", "profile"], expires_in_days=9)
    clock.advance(60)
    response = await client.post(f"/me/api-keys/{old['id']}/rotate", headers=bearer(access_token))
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    new = response.json()
    register(new["key"])
    assert new["id"] != old["id"]
    assert new["key"] != old["key"]
    for field in ("name", "permissions", "expires_at"):
        assert new[field] == old[field]
    with pytest.raises(InvalidApiKey):
        await bastion.api_keys.authenticate(old["key"])
    assert (await bastion.api_keys.authenticate(new["key"])).token_id == new["id"]
    assert [k["id"] for k in await listed(client, access_token)] == [new["id"]]
    again = await client.post(f"/me/api-keys/{old['id']}/rotate", headers=bearer(access_token))
    assert_problem(again, 404)


async def test_an_expired_key_cannot_be_rotated(
    client: httpx.AsyncClient, clock: FrozenClock, access_token: str
) -> None:
    """Rotation would hand out a dead key: 409, create a new one instead."""
    expiry = clock.now() + timedelta(minutes=1)
    created = await create(client, access_token, expires_at=expiry.isoformat())
    clock.advance(minutes=1)  # the access token (15 minutes) still works
    response = await client.post(
        f"/me/api-keys/{created['id']}/rotate", headers=bearer(access_token)
    )
    assert_problem(response, 409)


# ------------------------------------------------------------------ audit


async def test_creation_revocation_and_rotation_are_audited_without_secrets(
    client: httpx.AsyncClient,
    access_token: str,
    registered: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``api_key.created``, ``.rotated`` and ``.revoked`` name the actor and
    the key id; no audit line holds a secret."""
    caplog.set_level("INFO", logger="bastion.audit")
    created = await create(client, access_token)
    rotated = (
        await client.post(f"/me/api-keys/{created['id']}/rotate", headers=bearer(access_token))
    ).json()
    register(rotated["key"])
    await client.delete(f"/me/api-keys/{rotated['id']}", headers=bearer(access_token))
    actor = registered["id"]
    [made] = audit_events(caplog, "api_key.created")
    assert (made["actor"], made["target"], made["permissions"]) == (actor, created["id"], "profile")
    [turned] = audit_events(caplog, "api_key.rotated")
    assert (turned["actor"], turned["target"], turned["successor"]) == (
        actor,
        created["id"],
        rotated["id"],
    )
    [ended] = audit_events(caplog, "api_key.revoked")
    assert (ended["actor"], ended["target"]) == (actor, rotated["id"])
    lines = [r.getMessage() for r in caplog.records]
    for key in (created["key"], rotated["key"]):
        secret = key.split("_", 2)[2]
        assert all(secret not in line for line in lines)


# ------------------------------------------------------------------ administrators


async def test_admins_list_and_revoke_any_users_keys(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    access_token: str,
    registered: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``users:admin`` lists a user's keys (never the secret) and revokes any
    key, one or all; the audit names the admin."""
    caplog.set_level("INFO", logger="bastion.audit")
    admin = await admin_account(client, bastion, clock)
    first = await create(client, access_token)
    second = await create(client, access_token)
    path = f"/admin/users/{registered['id']}/api-keys"
    response = await client.get(path, headers=admin.headers)
    assert response.status_code == 200, response.text
    assert {k["id"] for k in response.json()} == {first["id"], second["id"]}
    assert first["key"] not in response.text

    response = await client.delete(f"/admin/api-keys/{first['id']}", headers=admin.headers)
    assert response.status_code == 204
    with pytest.raises(InvalidApiKey):
        await bastion.api_keys.authenticate(first["key"])
    [event] = audit_events(caplog, "api_key.revoked")
    assert (event["actor"], event["target"]) == (admin.id, first["id"])
    assert_problem(
        await client.delete(f"/admin/api-keys/{first['id']}", headers=admin.headers), 404
    )

    response = await client.delete(path, headers=admin.headers)
    assert response.json() == {"revoked": 1}
    with pytest.raises(InvalidApiKey):
        await bastion.api_keys.authenticate(second["key"])
    assert (await client.get(path, headers=admin.headers)).json() == []


async def test_admin_key_routes_need_users_admin(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    access_token: str,
    registered: dict[str, str],
) -> None:
    """A user without ``users:admin`` gets 403 and changes nothing; an unknown
    user is 404 for an admin."""
    created = await create(client, access_token)
    for method, path in (
        ("GET", f"/admin/users/{registered['id']}/api-keys"),
        ("DELETE", f"/admin/users/{registered['id']}/api-keys"),
        ("DELETE", f"/admin/api-keys/{created['id']}"),
    ):
        assert_problem(await client.request(method, path, headers=bearer(access_token)), 403)
    assert len(await listed(client, access_token)) == 1
    admin = await admin_account(client, bastion, clock)
    nobody = "00000000-0000-4000-8000-000000000000"
    for method in ("GET", "DELETE"):
        response = await client.request(
            method, f"/admin/users/{nobody}/api-keys", headers=admin.headers
        )
        assert_problem(response, 404)


# ------------------------------------------------------------------ the owner's permissions


async def test_losing_a_role_narrows_the_key_at_once(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """An editor's key with ``content:read``: once the admin API takes the
    editor role away, the key's scopes lose it on the very next use."""
    editor = await account(client, bastion, clock, "ed@example.com", ["editor"])
    created = await create(client, editor.access_token, permissions=["content:read", "profile"])
    assert (await bastion.api_keys.authenticate(created["key"])).scopes == {
        "content:read",
        "profile",
    }
    admin = await admin_account(client, bastion, clock)
    response = await client.patch(
        f"/admin/users/{editor.id}", json={"roles": ["user"]}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    assert (await bastion.api_keys.authenticate(created["key"])).scopes == {"profile"}


async def test_disabling_the_owner_disables_the_key_at_once(
    client: httpx.AsyncClient,
    bastion: Bastion,
    clock: FrozenClock,
    access_token: str,
    registered: dict[str, str],
) -> None:
    """Disabled through the admin API: refused on the next use; enabled
    again: the key works again (it was never revoked)."""
    created = await create(client, access_token)
    await bastion.api_keys.authenticate(created["key"])
    admin = await admin_account(client, bastion, clock)
    path = f"/admin/users/{registered['id']}"
    await client.patch(path, json={"is_active": False}, headers=admin.headers)
    with pytest.raises(InvalidApiKey):
        await bastion.api_keys.authenticate(created["key"])
    await client.patch(path, json={"is_active": True}, headers=admin.headers)
    assert (await bastion.api_keys.authenticate(created["key"])).subject == registered["id"]


NARROWING = [
    ({"profile", "email"}, {"profile"}, {"profile"}),
    ({"content:read"}, {"content:*"}, {"content:read"}),
    ({"content:*"}, {"content:*"}, {"content:*"}),
    ({"content:*"}, {"content:read", "contents:read", "profile"}, {"content:read"}),
    ({"content:*"}, {"profile"}, set()),
    ({"users:admin"}, set(), set()),
]


@pytest.mark.parametrize(("key", "held", "expected"), NARROWING)
def test_narrowing_to_the_owners_current_permissions(
    key: set[str], held: set[str], expected: set[str]
) -> None:
    """What the key may do is what both it and its owner's current
    permissions allow; a wildcard the owner lost shrinks to what they hold."""
    assert narrowed(frozenset(key), frozenset(held)) == expected


# ------------------------------------------------------------------ last use and housekeeping


async def test_last_used_is_written_at_most_once_per_interval(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock, access_token: str
) -> None:
    """The first use writes ``last_used_at``; uses within the touch interval
    (60 s) do not; the first use after it does."""
    created = await create(client, access_token)
    start = clock.now()

    async def last_used() -> str | None:
        [item] = await listed(client, access_token)
        value: str | None = item["last_used_at"]
        return value

    await bastion.api_keys.authenticate(created["key"])
    first = await last_used()
    assert first is not None
    assert first.startswith(start.strftime("%Y-%m-%dT%H:%M:%S"))
    for _ in range(3):
        clock.advance(19)
        await bastion.api_keys.authenticate(created["key"])
        assert await last_used() == first
    clock.advance(3)  # 60 s after the first use
    await bastion.api_keys.authenticate(created["key"])
    later = await last_used()
    assert later is not None
    assert later.startswith((start + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%S"))


async def test_purge_removes_long_dead_keys(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock, access_token: str
) -> None:
    """Housekeeping deletes keys revoked or expired more than the retention
    (30 days) ago, and no live key."""
    revoked = await create(client, access_token)
    await client.delete(f"/me/api-keys/{revoked['id']}", headers=bearer(access_token))
    expiring = await create(client, access_token, expires_in_days=1)
    live = await create(client, access_token)
    clock.advance(days=30)
    assert (await bastion.purge())["api_keys"] == 0
    clock.advance(days=1, seconds=1)
    assert (await bastion.purge())["api_keys"] == 2
    remaining = await rows(bastion, "SELECT key_id FROM api_keys")
    assert remaining == [(live["id"],)]
    assert expiring["id"] != live["id"]


async def account_key(
    client: httpx.AsyncClient, who: Account, permissions: list[str]
) -> dict[str, Any]:
    return await create(client, who.access_token, permissions=permissions)


async def test_a_key_of_another_user_authenticates_as_that_user_only(
    client: httpx.AsyncClient, bastion: Bastion, clock: FrozenClock
) -> None:
    """Each key proves its own owner: two users' keys give two subjects."""
    carol = await account(client, bastion, clock, "carol@example.com")
    dave = await account(client, bastion, clock, "dave@example.com")
    carols = await account_key(client, carol, ["profile"])
    daves = await account_key(client, dave, ["email"])
    assert (await bastion.api_keys.authenticate(carols["key"])).subject == carol.id
    principal = await bastion.api_keys.authenticate(daves["key"])
    assert (principal.subject, principal.scopes) == (dave.id, {"email"})
    assert UUID(principal.subject) == dave.uuid


async def test_a_narrow_token_cannot_mint_or_rotate_a_broader_key(
    client: httpx.AsyncClient, registered: dict[str, str], access_token: str
) -> None:
    """A key never carries more than the credential making it: a token narrowed
    to `profile` gets 403 for a key with `email`, and cannot rotate (and so
    reveal) such a key made by a full token; nothing is created."""
    broad = await create(client, access_token, permissions=["profile", "email"])
    narrow = (await login(client, registered["email"], registered["password"], scope="profile"))[
        "access_token"
    ]
    minted = await client.post(
        "/me/api-keys", json={"name": "k", "permissions": ["email"]}, headers=bearer(narrow)
    )
    assert_problem(minted, 403)
    rotated = await client.post(f"/me/api-keys/{broad['id']}/rotate", headers=bearer(narrow))
    assert_problem(rotated, 403)
    assert [key["id"] for key in await listed(client, access_token)] == [broad["id"]]
    assert (await create(client, narrow, permissions=["profile"]))["permissions"] == ["profile"]


async def test_a_password_change_revokes_every_key(
    client: httpx.AsyncClient, bastion: Bastion, registered: dict[str, str], access_token: str
) -> None:
    """A key made with the old password does not outlive it: after the change
    every key of the user is refused."""
    created = await create(client, access_token)
    changed = await client.post(
        "/me/password",
        json={
            "current_password": registered["password"],
            "new_password": "a new and long passphrase",
        },
        headers=bearer(access_token),
    )
    assert changed.status_code == 204, changed.text
    register("a new and long passphrase")
    with pytest.raises(InvalidApiKey):
        await bastion.api_keys.authenticate(created["key"])
