"""``ApiKeyGuard`` in an embedding application: a key in ``X-API-Key`` becomes
a ``Principal`` (``auth_method="api_key"``); every bad key is one generic 401
with an ``ApiKey`` challenge (RFC 9110 §11.6.1), a missing scope a 403, an
unreachable store a 503, never a pass."""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures of the embedding app at runtime, and they refer to a local guard.
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import httpx
import pytest
from fastapi import Depends, FastAPI, Security

from bastion import Bastion, install_error_handlers
from bastion.api_keys import IssuedApiKey
from bastion.clock import FrozenClock
from bastion.guard import Principal
from bastion.settings import Settings
from bastion.stores.sql import SqlApiKeyStore, create_engine, create_sessionmaker
from tests.admin_flows import shared_settings
from tests.conftest import ISSUER, PASSWORD
from tests.http_checks import assert_problem
from tests.secrets_in_logs import EVENT_HOOKS, register
from tests.token_flows import running

pytestmark = pytest.mark.anyio

CHALLENGE = 'ApiKey header="X-API-Key"'
INVALID = "Invalid API key."
SAMPLE_SECRET = "A" * 43


def embedding_app(bastion: Bastion) -> FastAPI:
    """A resource server embedding Bastion, with routes guarded by API keys."""
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(bastion.router)
    guard = bastion.api_key_principal

    @app.get("/whoami")
    async def whoami(principal: Annotated[Principal, Depends(guard)]) -> dict[str, Any]:
        return {
            "subject": principal.subject,
            "scopes": sorted(principal.scopes),
            "roles": list(principal.roles),
            "client_id": principal.client_id,
            "token_id": principal.token_id,
            "auth_method": principal.auth_method,
            "claims": principal.claims,
        }

    @app.get("/profile")
    async def profile(
        principal: Annotated[Principal, Security(guard, scopes=["profile"])],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/content")
    async def content(
        principal: Annotated[Principal, Depends(guard.require_permissions("content:write"))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/users-only")
    async def users_only(
        principal: Annotated[Principal, Depends(guard.require_roles("user"))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    @app.get("/maybe")
    async def maybe(
        principal: Annotated[Principal | None, Depends(bastion.optional_api_key_principal)],
    ) -> dict[str, str | None]:
        return {"subject": principal.subject if principal is not None else None}

    return app


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def shared_api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    """One embedding app for the tables of refused keys, which change nothing."""
    settings = shared_settings(tmp_path_factory.mktemp("api-key-guard"))
    async with running(settings, FrozenClock()) as instance:
        transport = httpx.ASGITransport(app=embedding_app(instance))
        async with httpx.AsyncClient(
            transport=transport, base_url=ISSUER, event_hooks=EVENT_HOOKS
        ) as http:
            yield http


@pytest.fixture
async def api(bastion: Bastion) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=embedding_app(bastion))
    async with httpx.AsyncClient(
        transport=transport, base_url=ISSUER, event_hooks=EVENT_HOOKS
    ) as http:
        yield http


async def new_user(
    bastion: Bastion, email: str, roles: frozenset[str] = frozenset({"user"})
) -> UUID:
    user = await bastion.accounts.register(email=email, password=PASSWORD, roles=roles)
    return user.id


async def issue(
    bastion: Bastion, user_id: UUID, permissions: list[str] | None = None, **options: Any
) -> IssuedApiKey:
    issued = await bastion.api_keys.create(
        user_id, "test key", permissions or ["profile"], **options
    )
    register(issued.key)
    return issued


@pytest.fixture
async def alice(bastion: Bastion) -> UUID:
    return await new_user(bastion, "alice@example.com")


@pytest.fixture
async def alice_key(bastion: Bastion, alice: UUID) -> IssuedApiKey:
    return await issue(bastion, alice, ["profile", "email"])


def key(value: str) -> dict[str, str]:
    return {"X-API-Key": value}


def assert_invalid_key(response: httpx.Response, *secrets_: str) -> None:
    """401 problem details, the generic text, and the ``ApiKey`` challenge."""
    body = assert_problem(response, 401, *secrets_)
    assert body["detail"] == INVALID
    assert response.headers["www-authenticate"] == CHALLENGE


# ------------------------------------------------------------------ good keys


async def test_a_key_becomes_an_api_key_principal(
    api: httpx.AsyncClient, alice: UUID, alice_key: IssuedApiKey
) -> None:
    """The principal: the owner's id, the key's permissions, no roles, the
    first-party client, the key id, auth_method api_key, no claims."""
    response = await api.get("/whoami", headers=key(alice_key.key))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "subject": str(alice),
        "scopes": ["email", "profile"],
        "roles": [],
        "client_id": "bastion",
        "token_id": alice_key.record.key_id,
        "auth_method": "api_key",
        "claims": None,
    }


async def test_scopes_through_security_are_checked(
    bastion: Bastion, api: httpx.AsyncClient, alice: UUID
) -> None:
    """``Security(guard, scopes=["profile"])``: a key with it passes, a key
    without it gets 403 insufficient_scope."""
    with_profile = await issue(bastion, alice, ["profile"])
    without = await issue(bastion, alice, ["email"])
    assert (await api.get("/profile", headers=key(with_profile.key))).status_code == 200
    response = await api.get("/profile", headers=key(without.key))
    body = assert_problem(response, 403, without.key)
    assert "scope" in body["detail"]


async def test_require_permissions_honours_wildcards(
    bastion: Bastion, api: httpx.AsyncClient
) -> None:
    """A key holding ``content:*`` (its owner holds it) may do ``content:write``;
    a key holding only ``content:read`` may not."""
    await bastion.authz.create_role(
        "writer", description="writes", parents=[], permissions=["content:*"], actor="test"
    )
    owner = await new_user(bastion, "writer@example.com", frozenset({"writer"}))
    wildcard = await issue(bastion, owner, ["content:*"])
    reader = await issue(bastion, owner, ["content:read"])
    assert (await api.get("/content", headers=key(wildcard.key))).status_code == 200
    assert_problem(await api.get("/content", headers=key(reader.key)), 403)


async def test_require_roles_never_admits_an_api_key(
    api: httpx.AsyncClient, alice_key: IssuedApiKey
) -> None:
    """Keys carry no roles, so a role check refuses them (403), even for a
    role the owner holds."""
    assert_problem(await api.get("/users-only", headers=key(alice_key.key)), 403)


# ------------------------------------------------------------------ missing or bad keys


async def test_no_key_is_401_with_a_challenge(shared_api: httpx.AsyncClient) -> None:
    """RFC 9110 §11.6.1: the 401 names the scheme and header to use."""
    response = await shared_api.get("/whoami")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == CHALLENGE


async def test_the_optional_guard_is_none_without_a_key_and_401_with_a_bad_one(
    api: httpx.AsyncClient, alice_key: IssuedApiKey
) -> None:
    """``auto_error=False``: no key is an anonymous caller; a bad key is still
    refused, never silently anonymous."""
    assert (await api.get("/maybe")).json() == {"subject": None}
    ok = await api.get("/maybe", headers=key(alice_key.key))
    assert ok.json() == {"subject": str(alice_key.record.user_id)}
    assert_invalid_key(await api.get("/maybe", headers=key("bst_nonsense")))


MALFORMED = {
    "empty": "",
    "no prefix": "0123456789abcdef_" + SAMPLE_SECRET,
    "wrong prefix": "bsx_0123456789abcdef_" + SAMPLE_SECRET,
    "refresh-token prefix": "brt_0123456789abcdef_" + SAMPLE_SECRET,
    "upper-case prefix": "BST_0123456789abcdef_" + SAMPLE_SECRET,
    "upper-case id": "bst_0123456789ABCDEF_" + SAMPLE_SECRET,
    "id too short": "bst_0123456789abcde_" + SAMPLE_SECRET + "A",
    "id too long": "bst_0123456789abcdef0_" + SAMPLE_SECRET[:-1],
    "id not hex": "bst_0123456789abcdeg_" + SAMPLE_SECRET,
    "secret too short": "bst_0123456789abcdef_" + SAMPLE_SECRET[:-1],
    "secret too long": "bst_0123456789abcdef_" + SAMPLE_SECRET + "A",
    "secret with padding": "bst_0123456789abcdef_" + SAMPLE_SECRET[:-1] + "=",
    "secret with a dot": "bst_0123456789abcdef_" + SAMPLE_SECRET[:-1] + ".",
    "missing secret": "bst_0123456789abcdef",
    "missing separator": "bst_0123456789abcdef" + SAMPLE_SECRET + "A",
    "only the prefix": "bst_",
    "bearer scheme in the header": "Bearer bst_0123456789abcdef_" + SAMPLE_SECRET,
    "space inside": "bst_0123456789abcdef_" + SAMPLE_SECRET[:-1] + " ",
    "huge": "bst_" + "a" * 8000,
    "sql": "bst_' OR 1=1 --",
    "jwt": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
}


@pytest.mark.parametrize("value", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_keys_are_one_generic_401(
    shared_api: httpx.AsyncClient, value: str
) -> None:
    """Anything that is not ``bst_<16 hex>_<43 base64url>`` is refused before any lookup."""
    assert_invalid_key(await shared_api.get("/whoami", headers=key(value)))


async def test_a_non_ascii_key_is_a_generic_401(shared_api: httpx.AsyncClient) -> None:
    """Bytes outside ASCII in the header (read as Latin-1) are just a bad key."""
    value = ("bst_0123456789abcdef_" + "é" * 43).encode()
    response = await shared_api.get("/whoami", headers={"X-API-Key": value})  # type: ignore[dict-item]
    assert_invalid_key(response)


async def test_unknown_id_and_wrong_secret_answer_alike(
    api: httpx.AsyncClient, alice_key: IssuedApiKey
) -> None:
    """A well-formed key with an unknown id, and the right id with a wrong
    secret, get the same answer as any other bad key."""
    unknown = "bst_" + secrets.token_hex(8) + "_" + secrets.token_urlsafe(32)
    wrong = f"bst_{alice_key.record.key_id}_{secrets.token_urlsafe(32)}"
    for value in (unknown, wrong):
        assert_invalid_key(await api.get("/whoami", headers=key(value)), value)


async def test_a_wrong_secret_is_refused_even_after_the_key_was_cached(
    api: httpx.AsyncClient, alice_key: IssuedApiKey
) -> None:
    """The cache of accepted keys compares the secret too."""
    assert (await api.get("/whoami", headers=key(alice_key.key))).status_code == 200
    wrong = f"bst_{alice_key.record.key_id}_{secrets.token_urlsafe(32)}"
    assert_invalid_key(await api.get("/whoami", headers=key(wrong)), wrong)


async def test_an_expired_key_is_refused(
    bastion: Bastion, api: httpx.AsyncClient, clock: FrozenClock, alice: UUID
) -> None:
    """At its expiry, not a moment later, even if it was just accepted."""
    issued = await issue(bastion, alice, expires_in_days=1)
    assert (await api.get("/whoami", headers=key(issued.key))).status_code == 200
    clock.advance(days=1)
    assert_invalid_key(await api.get("/whoami", headers=key(issued.key)), issued.key)


async def test_a_revoked_key_is_refused_at_once(
    bastion: Bastion, api: httpx.AsyncClient, alice_key: IssuedApiKey
) -> None:
    """Revoked through this instance: refused on the next request, cache or not."""
    assert (await api.get("/whoami", headers=key(alice_key.key))).status_code == 200
    await bastion.api_keys.revoke(alice_key.record.key_id, owner=alice_key.record.user_id)
    assert_invalid_key(await api.get("/whoami", headers=key(alice_key.key)), alice_key.key)


async def test_a_rotated_away_key_is_refused_and_its_successor_works(
    bastion: Bastion, api: httpx.AsyncClient, alice_key: IssuedApiKey
) -> None:
    """Rotation ends the old secret at once and hands out a working new one."""
    assert (await api.get("/whoami", headers=key(alice_key.key))).status_code == 200
    successor = await bastion.api_keys.rotate(
        alice_key.record.key_id, owner=alice_key.record.user_id
    )
    register(successor.key)
    assert_invalid_key(await api.get("/whoami", headers=key(alice_key.key)), alice_key.key)
    response = await api.get("/whoami", headers=key(successor.key))
    assert response.status_code == 200
    assert response.json()["token_id"] == successor.record.key_id


@pytest.mark.parametrize("change", ["disabled", "deleted"])
async def test_a_key_of_a_disabled_or_deleted_owner_is_refused(
    bastion: Bastion, api: httpx.AsyncClient, alice: UUID, alice_key: IssuedApiKey, change: str
) -> None:
    """The owner's standing is checked: a disabled or deleted account's keys
    stop working (the revocation the admin API does drops the cache at once)."""
    assert (await api.get("/whoami", headers=key(alice_key.key))).status_code == 200
    if change == "disabled":
        await bastion.accounts.set_active(alice, False)
    else:
        await bastion.users.delete_user(alice)
    await bastion.revocations.expire_access_tokens([alice])
    assert_invalid_key(await api.get("/whoami", headers=key(alice_key.key)), alice_key.key)


async def test_store_outage_is_503_never_a_pass(
    bastion: Bastion, api: httpx.AsyncClient, alice_key: IssuedApiKey, tmp_path: Path
) -> None:
    """When the key store cannot answer, the request is refused with 503."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}")  # a directory: cannot open
    working = bastion.api_keys.store
    bastion.api_keys.store = SqlApiKeyStore(create_sessionmaker(engine))
    try:
        response = await api.get("/whoami", headers=key(alice_key.key))
        assert_problem(response, 503, alice_key.key)
        assert_problem(await api.get("/maybe", headers=key(alice_key.key)), 503)
    finally:
        bastion.api_keys.store = working
        await engine.dispose()


# ------------------------------------------------------------------ caching across instances


async def test_another_instance_sees_a_revocation_within_the_cache_ttl(
    bastion: Bastion,
    settings: Settings,
    clock: FrozenClock,
    api: httpx.AsyncClient,
    alice_key: IssuedApiKey,
) -> None:
    """Instance B remembers an accepted key for at most the revocation cache
    TTL (1 s): a revocation made on A holds on B once that has passed."""
    async with running(settings, clock) as other:
        transport = httpx.ASGITransport(app=embedding_app(other))
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as api_b:
            assert (await api_b.get("/whoami", headers=key(alice_key.key))).status_code == 200
            await bastion.api_keys.revoke(alice_key.record.key_id, owner=None)
            assert_invalid_key(await api.get("/whoami", headers=key(alice_key.key)))
            # B answers from its cache until the TTL has passed...
            assert (await api_b.get("/whoami", headers=key(alice_key.key))).status_code == 200
            clock.advance(settings.revocation_cache_ttl)  # ...and not a moment longer
            assert_invalid_key(await api_b.get("/whoami", headers=key(alice_key.key)))


# ------------------------------------------------------------------ configuration and OpenAPI


@asynccontextmanager
async def app_with(
    make_settings: Callable[..., Settings], clock: FrozenClock, **overrides: object
) -> AsyncIterator[tuple[Bastion, httpx.AsyncClient]]:
    """Another Bastion from ``make_settings(**overrides)`` behind the embedding app."""
    async with running(make_settings(**overrides), clock) as instance:
        transport = httpx.ASGITransport(app=embedding_app(instance))
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            yield instance, http


async def test_header_query_and_cookie_locations_follow_the_settings(
    make_settings: Callable[..., Settings], clock: FrozenClock
) -> None:
    """A renamed header is the one read (and named in the challenge); the
    query string and the cookie count only when configured."""
    async with app_with(
        make_settings, clock, api_key_header="X-Token", api_key_query_param="api_key"
    ) as (instance, http):
        owner = await new_user(instance, "carol@example.com")
        issued = await issue(instance, owner)
        assert (await http.get("/whoami", headers={"X-Token": issued.key})).status_code == 200
        missing = await http.get("/whoami", headers={"X-API-Key": issued.key})
        assert_problem(missing, 401)
        assert missing.headers["www-authenticate"] == 'ApiKey header="X-Token"'
        assert (await http.get("/whoami", params={"api_key": issued.key})).status_code == 200
        http.cookies.set("api_key", issued.key)
        assert_problem(await http.get("/whoami"), 401)


async def test_query_and_cookie_are_off_by_default(
    api: httpx.AsyncClient, alice_key: IssuedApiKey
) -> None:
    """By default only the header counts: a key elsewhere is no key at all."""
    for name in ("api_key", "X-API-Key", "key"):
        assert_problem(await api.get("/whoami", params={name: alice_key.key}), 401)
    api.cookies.set("X-API-Key", alice_key.key)
    assert_problem(await api.get("/whoami"), 401)


async def test_cookie_location_when_configured(
    make_settings: Callable[..., Settings], clock: FrozenClock
) -> None:
    """``BASTION_API_KEY_COOKIE`` set: the key is accepted from that cookie."""
    async with app_with(make_settings, clock, api_key_cookie="bastion_key") as (
        instance,
        http,
    ):
        owner = await new_user(instance, "dave@example.com")
        issued = await issue(instance, owner)
        http.cookies.set("bastion_key", issued.key)
        assert (await http.get("/whoami")).status_code == 200


async def test_openapi_lists_the_api_key_scheme(shared_api: httpx.AsyncClient) -> None:
    """The scheme is an ``apiKey`` in the configured header, and the guarded
    routes require it."""
    document = (await shared_api.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bastion_api_key"]["type"] == "apiKey"
    assert schemes["bastion_api_key"]["in"] == "header"
    assert schemes["bastion_api_key"]["name"] == "X-API-Key"
    security = document["paths"]["/profile"]["get"]["security"]
    assert {"bastion_api_key": ["profile"]} in security
