"""Discovery and the rest of the edge: the JWKS (RFC 7517), RFC 8414 metadata,
``/health``, RFC 9457 answers for unknown paths and methods, a database outage
answered with 503 rather than 500, and the OpenAPI document's security scheme."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpx
import pytest

from bastion.authz.defaults import DOCUMENTED_SCOPES
from bastion.clock import FrozenClock
from bastion.core import Bastion
from bastion.server.app import create_app
from bastion.settings import Settings
from tests.conftest import ISSUER
from tests.http_checks import assert_no_leak, assert_problem

pytestmark = pytest.mark.anyio

PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
"""RFC 7518 §6.2.2, §6.3.2, §6.4: members that would publish a private or secret key."""


# ------------------------------------------------------------------ JWKS


async def test_jwks_publishes_public_keys_only(client: httpx.AsyncClient, bastion: Bastion) -> None:
    """Every published key, the retired one included, is public, named and marked for signing."""
    await bastion.keys.rotate()
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    keys = response.json()["keys"]
    assert len(keys) == 2
    for key in keys:
        assert not PRIVATE_JWK_MEMBERS & set(key), key
        assert key["kty"] in {"OKP", "EC", "RSA"}
        assert key["alg"] in {"EdDSA", "ES256", "RS256"}
        assert key["use"] == "sig"
        assert isinstance(key["kid"], str)
        assert key["kid"]
    assert len({key["kid"] for key in keys}) == 2


async def test_jwks_cache_headers(client: httpx.AsyncClient, settings: Settings) -> None:
    """Clients may cache the JWKS publicly for the key-cache interval."""
    response = await client.get("/.well-known/jwks.json")
    directives = {d.strip() for d in response.headers["cache-control"].split(",")}
    assert directives == {"public", f"max-age={settings.key_cache_ttl}"}
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_jwks_is_read_only(client: httpx.AsyncClient, method: str) -> None:
    """The JWKS cannot be written: other methods are a 405 problem."""
    response = await client.request(method, "/.well-known/jwks.json", json={"keys": []})
    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]


# ------------------------------------------------------------------ RFC 8414


async def test_metadata_has_the_rfc_8414_fields(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """RFC 8414 §2: the issuer, absolute endpoint URLs under it, and the supported values."""
    response = await client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    meta: dict[str, Any] = response.json()
    assert meta["issuer"] == ISSUER
    issuer = urlsplit(meta["issuer"])
    assert issuer.scheme in {"http", "https"}
    assert not issuer.query
    assert not issuer.fragment
    assert meta["token_endpoint"] == f"{ISSUER}/oauth/token"
    assert meta["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert "password" in meta["grant_types_supported"]
    assert meta["response_types_supported"] == []
    # every permission some role holds: the seeded roles' until an operator changes them
    assert meta["scopes_supported"] == sorted(DOCUMENTED_SCOPES)
    assert meta["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "none",
    ]
    assert "client_credentials" in meta["grant_types_supported"]
    urls = [name for name in meta if name.endswith(("_endpoint", "_uri"))]
    assert {"token_endpoint", "jwks_uri"} <= set(urls)
    for name in urls:
        assert meta[name].startswith(meta["issuer"] + "/"), name


async def test_metadata_endpoints_are_live(client: httpx.AsyncClient) -> None:
    """The URLs the metadata names answer on this server."""
    meta = (await client.get("/.well-known/oauth-authorization-server")).json()
    jwks = await client.get(urlsplit(meta["jwks_uri"]).path)
    assert jwks.status_code == 200
    token = await client.post(urlsplit(meta["token_endpoint"]).path, data={})
    assert token.status_code == 400
    assert token.json()["error"] == "invalid_request"


# ------------------------------------------------------------------ health


async def test_health_ok(client: httpx.AsyncClient) -> None:
    """``/health`` is 200 while the database answers."""
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "not_configured"}


def unreachable_postgres(tmp_path: Path) -> str:
    return "postgresql+asyncpg://nobody@127.0.0.1:1/x"


def sqlite_path_is_a_directory(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}"


@pytest.fixture(
    params=[
        pytest.param(unreachable_postgres, id="postgres-unreachable"),
        pytest.param(sqlite_path_is_a_directory, id="sqlite-unopenable"),
    ]
)
async def down_client(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
    tmp_path: Path,
) -> AsyncIterator[httpx.AsyncClient]:
    """A server whose database cannot be reached. Its lifespan is never run:
    startup would fail, and the point is what a running server does when its
    database goes away."""
    before = set(threading.enumerate())
    instance = Bastion(make_settings(database_url=request.param(tmp_path)), clock=clock)
    transport = httpx.ASGITransport(app=create_app(bastion=instance))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            yield http
    finally:
        await instance.shutdown()
        await join_aiosqlite_workers(set(threading.enumerate()) - before)


async def join_aiosqlite_workers(threads: set[threading.Thread]) -> None:
    """Wait for aiosqlite's worker threads to end while the event loop is still open.

    A failed aiosqlite connect (0.22) queues its own shutdown and does not wait
    for it; the worker then posts the result to the test's event loop, which
    may be closed by then (a "thread exception" in the next test). Harmless in
    a server, whose loop outlives its connections."""
    for worker in threads:
        if "_connection_worker_thread" not in worker.name:
            continue
        await anyio.to_thread.run_sync(worker.join, 5.0)


async def test_health_is_503_when_the_database_is_gone(down_client: httpx.AsyncClient) -> None:
    """``/health`` says the database is down with 503, not 500."""
    response = await down_client.get("/health")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "down",
        "redis": "not_configured",
    }
    assert_no_leak(response, "nobody", "asyncpg", "sqlite")


PASSWORD = "a long and unusual passphrase"


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        pytest.param("GET", "/.well-known/jwks.json", {}, id="jwks"),
        pytest.param(
            "POST",
            "/auth/register",
            {"json": {"email": "ada@example.com", "password": PASSWORD}},
            id="register",
        ),
    ],
)
async def test_database_outage_is_503_problem(
    down_client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    """An endpoint that needs the database answers a 503 problem, with no driver detail."""
    response = await down_client.request(method, path, **kwargs)
    assert_problem(response, 503, PASSWORD, "nobody", "asyncpg", "sqlite", "OperationalError")


async def test_database_outage_at_the_token_endpoint_is_503_no_store(
    down_client: httpx.AsyncClient,
) -> None:
    """An outage at the token endpoint is a 503 problem, no-store, not ``invalid_grant``."""
    response = await down_client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": "ada@example.com", "password": PASSWORD},
    )
    assert_problem(response, 503, PASSWORD, "nobody", "asyncpg", "sqlite")
    assert response.headers["cache-control"] == "no-store"


async def test_database_outage_fails_closed_on_protected_routes(
    down_client: httpx.AsyncClient,
) -> None:
    """With no keys to check against, a token is not accepted: 401, never 200 or 500."""
    token = "eyJhbGciOiJFZERTQSIsImtpZCI6IngiLCJ0eXAiOiJhdCtqd3QifQ.e30.AAAA"
    response = await down_client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, token)


# ------------------------------------------------------------------ 404 / 405


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/nope", id="unknown"),
        pytest.param("/.well-known/openid-configuration", id="oidc-discovery"),
        pytest.param("/.well-known/jwks.json/extra", id="under-jwks"),
        pytest.param("/auth/register/", id="trailing-slash"),
        pytest.param("/auth/%00", id="nul"),
        pytest.param("/auth/../../etc/passwd", id="dot-dot"),
        pytest.param("/<script>alert(1)</script>", id="html"),
        pytest.param("/" + "a" * 8000, id="long"),
    ],
)
async def test_unknown_path_is_404_problem(client: httpx.AsyncClient, path: str) -> None:
    """An unknown path is a 404 problem that does not echo the path."""
    response = await client.get(path)
    if response.status_code in (307, 308):  # a redirect to the canonical path is fine too
        assert response.headers["location"].startswith(ISSUER + "/")
        return
    assert_problem(response, 404, "<script>", "a" * 100)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        pytest.param("GET", "/auth/register", "POST", id="get-register"),
        pytest.param("DELETE", "/auth/register", "POST", id="delete-register"),
        pytest.param("POST", "/health", "GET", id="post-health"),
        pytest.param("PUT", "/.well-known/oauth-authorization-server", "GET", id="put-metadata"),
        pytest.param("PATCH", "/me", "GET", id="patch-me"),
    ],
)
async def test_wrong_method_is_405_problem(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    """A known path with the wrong method is a 405 problem with ``Allow``."""
    response = await client.request(method, path)
    assert_problem(response, 405)
    assert allowed in response.headers["allow"]


# ------------------------------------------------------------------ OpenAPI


@pytest.fixture
async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def password_flow_schemes(openapi: dict[str, Any]) -> dict[str, Any]:
    schemes: dict[str, Any] = openapi["components"]["securitySchemes"]
    return {
        name: scheme
        for name, scheme in schemes.items()
        if scheme.get("type") == "oauth2" and "password" in scheme.get("flows", {})
    }


async def test_openapi_has_the_password_flow_to_the_token_endpoint(
    openapi: dict[str, Any],
) -> None:
    """Swagger's Authorize button: an OAuth2 password flow with ``tokenUrl`` ``/oauth/token``."""
    schemes = password_flow_schemes(openapi)
    assert len(schemes) == 1
    (scheme,) = schemes.values()
    assert scheme["flows"]["password"]["tokenUrl"] == "/oauth/token"
    assert "/oauth/token" in openapi["paths"]
    token_operation = openapi["paths"]["/oauth/token"]["post"]
    assert "security" not in token_operation  # logging in needs no token
    form = token_operation["requestBody"]["content"]
    assert list(form) == ["application/x-www-form-urlencoded"]


async def test_openapi_me_requires_the_profile_scope(openapi: dict[str, Any]) -> None:
    """``GET /me`` lists its three ways in as alternatives, each with the
    ``profile`` scope: the password-flow scheme, the API key, the session."""
    (name,) = password_flow_schemes(openapi)
    assert openapi["paths"]["/me"]["get"]["security"] == [
        {name: ["profile"]},
        {"bastion_api_key": ["profile"]},
        {"bastion_session": ["profile"]},
    ]


@pytest.mark.parametrize(
    ("path", "responses"),
    [
        pytest.param("/auth/register", {"201", "403", "409", "422"}, id="register"),
        pytest.param("/oauth/token", {"200", "400", "401"}, id="token"),
    ],
)
async def test_openapi_documents_the_error_answers(
    openapi: dict[str, Any], path: str, responses: set[str]
) -> None:
    """The documented answers include the refusals the tests above pin."""
    assert responses <= set(openapi["paths"][path]["post"]["responses"])


async def test_swagger_ui_is_served(client: httpx.AsyncClient) -> None:
    """The interactive docs page exists and points at the OpenAPI document."""
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "/openapi.json" in response.text
