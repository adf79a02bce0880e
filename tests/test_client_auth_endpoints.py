"""Client authentication at ``POST /oauth/revoke`` (RFC 7009 §2.1) and
``POST /oauth/introspect`` (RFC 7662 §2.1): a client revokes only its own
tokens, and a client allowed ``tokens:introspect`` may introspect without a
bearer token."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bastion.core import Bastion
from tests.client_flows import Registered, basic, client_credentials, new_client, raw_basic
from tests.http_checks import assert_oauth_error, assert_problem
from tests.token_flows import login, refresh

pytestmark = pytest.mark.anyio

INTROSPECT = "tokens:introspect"


def authenticated(
    registered: Registered, method: str, form: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """``(form, headers)`` carrying the client's credentials by ``method``."""
    if method == "basic":
        return form, basic(registered.client_id, registered.secret)
    return {**form, "client_id": registered.client_id, "client_secret": registered.secret}, {}


async def is_active(bastion: Bastion, token: str) -> bool:
    """What introspection says of ``token``, asked of the service directly."""
    return bool((await bastion.introspection.introspect(token))["active"])


@pytest.fixture
async def service(bastion: Bastion) -> Registered:
    return await new_client(bastion, scopes=["content:read"])


@pytest.fixture
async def user_tokens(client: httpx.AsyncClient, registered: dict[str, str]) -> dict[str, Any]:
    """A login of ``registered`` through the built-in ``bastion`` client."""
    return await login(client, registered["email"], registered["password"])


# ------------------------------------------------------------------ revoke


@pytest.mark.parametrize("method", ["basic", "post"])
async def test_a_client_revokes_its_own_access_token(
    client: httpx.AsyncClient, bastion: Bastion, service: Registered, method: str
) -> None:
    """An authenticated client's own token is revoked: 200, then inactive."""
    token = (await client_credentials(client, service)).json()["access_token"]
    form, headers = authenticated(service, method, {"token": token})
    response = await client.post("/oauth/revoke", data=form, headers=headers)
    assert response.status_code == 200, response.text
    assert not await is_active(bastion, token)


@pytest.mark.parametrize("method", ["basic", "post"])
async def test_a_client_revokes_its_own_refresh_token(
    client: httpx.AsyncClient, bastion: Bastion, registered: dict[str, str], method: str
) -> None:
    """A confidential client's refresh token, revoked by it, ends the session."""
    app = await new_client(
        bastion, grants=["password", "refresh_token"], scopes=["profile", "email"]
    )
    tokens = await login(
        client,
        registered["email"],
        registered["password"],
        headers=basic(app.client_id, app.secret),
    )
    form, headers = authenticated(app, method, {"token": tokens["refresh_token"]})
    assert (await client.post("/oauth/revoke", data=form, headers=headers)).status_code == 200
    again = await refresh(client, tokens["refresh_token"], headers=basic(app.client_id, app.secret))
    assert_oauth_error(again, 400, "invalid_grant")


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
async def test_another_clients_token_answers_200_and_stays_valid(
    client: httpx.AsyncClient,
    bastion: Bastion,
    service: Registered,
    user_tokens: dict[str, Any],
    kind: str,
) -> None:
    """RFC 7009 §2.1/§2.2: a token issued to another client is not revoked,
    and the answer (200) does not say so."""
    response = await client.post(
        "/oauth/revoke",
        data={"token": user_tokens[kind]},
        headers=basic(service.client_id, service.secret),
    )
    assert response.status_code == 200, response.text
    assert await is_active(bastion, user_tokens[kind])


async def test_one_client_cannot_revoke_another_clients_client_token(
    client: httpx.AsyncClient, bastion: Bastion, service: Registered
) -> None:
    """Client B presenting client A's access token revokes nothing."""
    token = (await client_credentials(client, service)).json()["access_token"]
    other = await new_client(bastion)
    response = await client.post(
        "/oauth/revoke", data={"token": token}, headers=basic(other.client_id, other.secret)
    )
    assert response.status_code == 200
    assert await is_active(bastion, token)


@pytest.mark.parametrize(
    ("headers", "form"),
    [
        pytest.param({}, {"client_secret": "wrong-secret-value"}, id="post-wrong-secret"),
        pytest.param("wrong-basic", {}, id="basic-wrong-secret"),
        pytest.param({}, {"client_id": "bcl_0000000000000000"}, id="unknown-client"),
        pytest.param({}, {"client_id": "__service__"}, id="confidential-without-secret"),
        pytest.param({"Authorization": "Basic %%%"}, {}, id="basic-bad-base64"),
        pytest.param(raw_basic(b"no-colon"), {}, id="basic-no-colon"),
        pytest.param(raw_basic(b"\xff:\xfe"), {}, id="basic-non-utf8"),
    ],
)
async def test_revoke_with_bad_client_credentials_is_invalid_client(
    client: httpx.AsyncClient,
    bastion: Bastion,
    service: Registered,
    headers: dict[str, str] | str,
    form: dict[str, str],
) -> None:
    """Failed client authentication is 401 ``invalid_client``, and nothing is revoked."""
    token = (await client_credentials(client, service)).json()["access_token"]
    if headers == "wrong-basic":
        headers = basic(service.client_id, service.secret + "x")
    if form.get("client_secret"):
        form = {**form, "client_id": service.client_id}
    if form.get("client_id") == "__service__":
        form = {"client_id": service.client_id}
    assert isinstance(headers, dict)
    response = await client.post("/oauth/revoke", data={"token": token, **form}, headers=headers)
    assert_oauth_error(response, 401, "invalid_client", service.secret, token)
    assert await is_active(bastion, token)


async def test_revoke_with_two_methods_is_invalid_request(
    client: httpx.AsyncClient, bastion: Bastion, service: Registered
) -> None:
    """RFC 6749 §2.3: Basic and ``client_secret`` together is ``invalid_request``."""
    token = (await client_credentials(client, service)).json()["access_token"]
    response = await client.post(
        "/oauth/revoke",
        data={"token": token, "client_secret": service.secret},
        headers=basic(service.client_id, service.secret),
    )
    assert_oauth_error(response, 400, "invalid_request", service.secret, token)
    assert await is_active(bastion, token)


# ------------------------------------------------------------------ introspect


@pytest.mark.parametrize("method", ["basic", "post"])
async def test_a_client_allowed_to_introspect_may_without_a_bearer(
    client: httpx.AsyncClient, bastion: Bastion, user_tokens: dict[str, Any], method: str
) -> None:
    """RFC 7662 §2.1: a client whose allowed scopes include ``tokens:introspect``
    authenticates with its credentials and gets the token's claims."""
    resource = await new_client(bastion, scopes=[INTROSPECT])
    form, headers = authenticated(resource, method, {"token": user_tokens["access_token"]})
    response = await client.post("/oauth/introspect", data=form, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["active"] is True
    assert body["client_id"] == "bastion"


async def test_a_client_may_hold_introspection_through_a_wildcard(
    client: httpx.AsyncClient, bastion: Bastion, user_tokens: dict[str, Any]
) -> None:
    """``tokens:*`` grants ``tokens:introspect`` (permission wildcards)."""
    resource = await new_client(bastion, scopes=["tokens:*"])
    response = await client.post(
        "/oauth/introspect",
        data={"token": user_tokens["refresh_token"]},
        headers=basic(resource.client_id, resource.secret),
    )
    assert response.status_code == 200, response.text
    assert response.json()["active"] is True


async def test_a_client_without_the_introspect_scope_is_403(
    client: httpx.AsyncClient, service: Registered, user_tokens: dict[str, Any]
) -> None:
    """An authenticated client not allowed ``tokens:introspect`` learns nothing: 403."""
    response = await client.post(
        "/oauth/introspect",
        data={"token": user_tokens["access_token"]},
        headers=basic(service.client_id, service.secret),
    )
    body = assert_problem(response, 403, service.secret)
    assert "active" not in body


@pytest.mark.parametrize(
    ("headers", "form"),
    [
        pytest.param("wrong-basic", {}, id="basic-wrong-secret"),
        pytest.param({}, "wrong-post", id="post-wrong-secret"),
        pytest.param({}, {"client_id": "bastion"}, id="public-client-id-only"),
        pytest.param({}, {"client_id": "bcl_0000000000000000"}, id="unknown-id-only"),
        pytest.param({"Authorization": "Basic ???"}, {}, id="basic-bad-base64"),
        pytest.param(raw_basic(b":nothing"), {}, id="basic-empty-id"),
    ],
)
async def test_introspect_with_bad_client_credentials_is_invalid_client(
    client: httpx.AsyncClient,
    bastion: Bastion,
    user_tokens: dict[str, Any],
    headers: dict[str, str] | str,
    form: dict[str, str] | str,
) -> None:
    """Client credentials that fail (or a public client, which proves nothing)
    are 401 ``invalid_client``, without any claim of the token."""
    resource = await new_client(bastion, scopes=[INTROSPECT])
    if headers == "wrong-basic":
        headers = basic(resource.client_id, resource.secret[::-1])
    if form == "wrong-post":
        form = {"client_id": resource.client_id, "client_secret": resource.secret[::-1]}
    assert isinstance(headers, dict)
    assert isinstance(form, dict)
    response = await client.post(
        "/oauth/introspect", data={"token": user_tokens["access_token"], **form}, headers=headers
    )
    body = assert_oauth_error(response, 401, "invalid_client", resource.secret)
    assert "active" not in body


async def test_introspect_with_two_methods_is_invalid_request(
    client: httpx.AsyncClient, bastion: Bastion, user_tokens: dict[str, Any]
) -> None:
    """RFC 6749 §2.3 holds here too: Basic plus ``client_secret`` is ``invalid_request``."""
    resource = await new_client(bastion, scopes=[INTROSPECT])
    response = await client.post(
        "/oauth/introspect",
        data={"token": user_tokens["access_token"], "client_secret": resource.secret},
        headers=basic(resource.client_id, resource.secret),
    )
    assert_oauth_error(response, 400, "invalid_request", resource.secret)
