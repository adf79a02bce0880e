"""``grant_type=client_credentials`` (RFC 6749 §4.4) and client authentication
at ``POST /oauth/token`` (§2.3.1: ``client_secret_basic``,
``client_secret_post``), plus which clients may use the password and refresh
grants."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Security

from bastion.core import Bastion
from bastion.guard import Principal
from bastion.server.errors import install_error_handlers
from tests.client_flows import Registered, basic, client_credentials, new_client, raw_basic
from tests.conftest import ISSUER
from tests.http_checks import assert_oauth_error
from tests.token_flows import audit_events, bearer, login, refresh

pytestmark = pytest.mark.anyio

BASIC_CHALLENGE = 'Basic realm="bastion"'


@pytest.fixture
async def service(bastion: Bastion) -> Registered:
    """A confidential client for client_credentials, allowed content:read and reports:*."""
    return await new_client(bastion)


# ------------------------------------------------------------------ success


@pytest.mark.parametrize("method", ["basic", "post"])
async def test_client_credentials_issues_a_token_for_the_client(
    client: httpx.AsyncClient, bastion: Bastion, service: Registered, method: str
) -> None:
    """Both auth methods give a Bearer token whose sub and client_id are the
    client, without roles and without a refresh token (§4.4.3), never cached."""
    response = await client_credentials(client, service, method=method)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "content:read reports:*"
    claims = await bastion.verifier.verify(body["access_token"])
    assert claims.subject == service.client_id
    assert claims.client_id == service.client_id
    assert claims.roles == ()
    assert "sid" not in claims.raw


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        pytest.param(None, "content:read reports:*", id="none-requested-all-allowed"),
        pytest.param("content:read", "content:read", id="subset"),
        pytest.param("reports:read", "reports:read", id="through-wildcard"),
        pytest.param("reports:read content:read", "content:read reports:read", id="two"),
        pytest.param("  content:read  ", "content:read", id="extra-spaces"),
    ],
)
async def test_scope_is_the_request_within_the_allowed_scopes(
    client: httpx.AsyncClient, service: Registered, requested: str | None, granted: str
) -> None:
    """RFC 6749 §3.3: the requested scopes the client is allowed, all when none is asked."""
    form = {"scope": requested} if requested is not None else {}
    response = await client_credentials(client, service, **form)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == granted


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param("content:write", id="not-allowed"),
        pytest.param("content:read users:admin", id="one-of-two-not-allowed"),
        pytest.param("reports", id="bare-resource-of-wildcard"),
        pytest.param("content:*", id="wildcard-wider-than-allowed"),
        pytest.param('a"b', id="outside-grammar"),
    ],
)
async def test_a_scope_the_client_is_not_allowed_is_invalid_scope(
    client: httpx.AsyncClient, service: Registered, scope: str
) -> None:
    """A requested scope outside the client's allowed ones is ``invalid_scope``, no token."""
    response = await client_credentials(client, service, scope=scope)
    assert_oauth_error(response, 400, "invalid_scope", service.secret)


async def test_client_ids_are_form_urlencoded_in_basic(
    client: httpx.AsyncClient, bastion: Bastion
) -> None:
    """§2.3.1: id and secret are form-urlencoded before base64, so an id with
    ``:``, ``+`` and a space works encoded, and the unencoded form does not."""
    odd = await new_client(bastion, client_id="svc:a+b c", scopes=["content:read"])
    data = {"grant_type": "client_credentials"}
    encoded = await client.post("/oauth/token", data=data, headers=basic(odd.client_id, odd.secret))
    assert encoded.status_code == 200, encoded.text
    raw = basic(odd.client_id, odd.secret, encode=False)
    assert_oauth_error(
        await client.post("/oauth/token", data=data, headers=raw), 401, "invalid_client"
    )


async def test_the_token_passes_a_scope_guarded_route(
    client: httpx.AsyncClient, bastion: Bastion, service: Registered
) -> None:
    """A client token opens ``Security(current_principal, scopes=[...])`` and
    ``require_permissions`` routes of an embedding app within its scopes only."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/content")
    async def content(
        p: Principal = Security(bastion.current_principal, scopes=["content:read"]),  # noqa: B008
    ) -> dict[str, Any]:
        return {"sub": p.subject, "client_id": p.client_id, "method": p.auth_method}

    @app.get(
        "/reports",
        dependencies=[Depends(bastion.current_principal.require_permissions("reports:read"))],
    )
    async def reports() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/drafts")
    async def drafts(
        p: Principal = Security(bastion.current_principal, scopes=["content:write"]),  # noqa: B008
    ) -> None:
        return None

    token = (await client_credentials(client, service)).json()["access_token"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as api:
        ok = await api.get("/content", headers=bearer(token))
        assert ok.status_code == 200, ok.text
        assert ok.json() == {
            "sub": service.client_id,
            "client_id": service.client_id,
            "method": "bearer",
        }
        assert (await api.get("/reports", headers=bearer(token))).status_code == 200
        assert (await api.get("/drafts", headers=bearer(token))).status_code == 403


async def test_issuing_is_audited_without_the_secret(
    client: httpx.AsyncClient, service: Registered, caplog: pytest.LogCaptureFixture
) -> None:
    """``token.client_credentials`` names the client and scope; no log line has the secret."""
    caplog.set_level(logging.DEBUG)
    response = await client_credentials(client, service, scope="content:read")
    assert response.status_code == 200
    [event] = audit_events(caplog, "token.client_credentials")
    assert event["actor"] == service.client_id
    assert event["scope"] == "content:read"
    await client_credentials(client, Registered(service.client_id, service.secret + "x"))
    assert all(service.secret not in record.getMessage() for record in caplog.records)


# ------------------------------------------------------------------ invalid_client


@pytest.mark.parametrize("method", ["basic", "post"])
@pytest.mark.parametrize(
    "who",
    [
        pytest.param("wrong-secret", id="wrong-secret"),
        pytest.param("unknown-client", id="unknown-client"),
        pytest.param("empty-secret", id="empty-secret"),
        pytest.param("public-client-with-a-secret", id="public-with-secret"),
    ],
)
async def test_bad_client_credentials_are_invalid_client_401(
    client: httpx.AsyncClient, service: Registered, method: str, who: str
) -> None:
    """§5.2: failed client authentication is 401 ``invalid_client`` with the
    Basic challenge and one generic text, whichever part was wrong."""
    presented = {
        "wrong-secret": Registered(service.client_id, service.secret[:-1] + "A"),
        "unknown-client": Registered("bcl_0000000000000000", service.secret),
        "empty-secret": Registered(service.client_id, ""),
        "public-client-with-a-secret": Registered("bastion", service.secret),
    }[who]
    response = await client_credentials(client, presented, method=method)
    body = assert_oauth_error(response, 401, "invalid_client", service.secret)
    assert body["error_description"] == "Client authentication failed."
    assert response.headers["www-authenticate"] == BASIC_CHALLENGE


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": "Basic !!!not-base64"}, id="bad-base64"),
        pytest.param({"Authorization": "Basic c3Zj"}, id="bad-padding"),
        pytest.param(raw_basic(b"no-colon-here"), id="no-colon"),
        pytest.param(raw_basic(b":secret-without-id"), id="empty-id"),
        pytest.param(raw_basic(b"svc:\xff\xfe"), id="non-utf8"),
        pytest.param(raw_basic(b"svc%FF:secret"), id="percent-not-utf8"),
        pytest.param(raw_basic(b"svc:sec\x00ret"), id="nul"),
        pytest.param(raw_basic(b"svc:" + b"s" * 2000), id="over-long"),
        pytest.param({"Authorization": "Basic "}, id="empty"),
        pytest.param({"Authorization": "Basic"}, id="scheme-only"),
    ],
)
async def test_malformed_basic_credentials_are_invalid_client(
    client: httpx.AsyncClient, service: Registered, headers: dict[str, str]
) -> None:
    """Basic that cannot be decoded (RFC 7617 §2) is 401 ``invalid_client``, never a 500."""
    response = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=headers
    )
    assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"] == BASIC_CHALLENGE


async def test_two_authentication_methods_at_once_are_invalid_request(
    client: httpx.AsyncClient, service: Registered
) -> None:
    """§2.3: Basic and a ``client_secret`` field together is ``invalid_request``, no token."""
    response = await client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": service.client_id,
            "client_secret": service.secret,
        },
        headers=basic(service.client_id, service.secret),
    )
    assert_oauth_error(response, 400, "invalid_request", service.secret)


async def test_a_client_id_field_naming_another_client_than_basic_is_invalid_request(
    client: httpx.AsyncClient, service: Registered
) -> None:
    """A ``client_id`` field beside Basic must name the same client."""
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "bastion"},
        headers=basic(service.client_id, service.secret),
    )
    assert_oauth_error(response, 400, "invalid_request", service.secret)


async def test_a_confidential_client_without_its_secret_is_invalid_client(
    client: httpx.AsyncClient, service: Registered
) -> None:
    """§3.2.1: a confidential client must authenticate; its id alone is not enough."""
    response = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": service.client_id}
    )
    assert_oauth_error(response, 401, "invalid_client")


# ------------------------------------------------------------------ unauthorized_client


@pytest.mark.parametrize(
    ("form", "why"),
    [
        pytest.param({"client_id": "bastion"}, "public", id="public-builtin"),
        pytest.param({}, "public", id="no-client-means-builtin"),
    ],
)
async def test_public_clients_cannot_use_client_credentials(
    client: httpx.AsyncClient, form: dict[str, str], why: str
) -> None:
    """§4.4: the grant is for confidential clients: a public one is ``unauthorized_client``."""
    response = await client.post("/oauth/token", data={"grant_type": "client_credentials", **form})
    assert_oauth_error(response, 400, "unauthorized_client")


async def test_a_client_without_the_grant_is_unauthorized_client(
    client: httpx.AsyncClient, bastion: Bastion
) -> None:
    """§5.2: a client not registered for client_credentials is ``unauthorized_client``."""
    other = await new_client(bastion, grants=["refresh_token"])
    response = await client_credentials(client, other)
    assert_oauth_error(response, 400, "unauthorized_client", other.secret)


# ------------------------------------------------------------------ password and refresh grants


async def test_the_password_grant_needs_a_client_registered_for_it(
    client: httpx.AsyncClient, bastion: Bastion, registered: dict[str, str]
) -> None:
    """RFC 9700 §2.4: a client without the password grant is ``unauthorized_client``
    even with the right user password; one registered for it logs in."""
    form = {
        "grant_type": "password",
        "username": registered["email"],
        "password": registered["password"],
    }
    service = await new_client(bastion)
    refused = await client.post(
        "/oauth/token", data=form, headers=basic(service.client_id, service.secret)
    )
    assert_oauth_error(refused, 400, "unauthorized_client", registered["password"])

    app = await new_client(
        bastion, grants=["password", "refresh_token"], scopes=["profile", "email"]
    )
    ok = await client.post("/oauth/token", data=form, headers=basic(app.client_id, app.secret))
    assert ok.status_code == 200, ok.text
    claims = await bastion.verifier.verify(ok.json()["access_token"])
    assert claims.client_id == app.client_id
    assert claims.subject == registered["id"]

    anonymous = await client.post("/oauth/token", data={**form, "client_id": app.client_id})
    assert_oauth_error(anonymous, 401, "invalid_client", registered["password"])


async def test_a_refresh_token_presented_by_another_client_is_invalid_grant(
    client: httpx.AsyncClient, bastion: Bastion, registered: dict[str, str]
) -> None:
    """§6: a refresh token is bound to its client: another (authenticated)
    client gets ``invalid_grant`` and the token stays usable by its owner."""
    tokens = await login(client, registered["email"], registered["password"])
    thief = await new_client(
        bastion, grants=["password", "refresh_token"], scopes=["profile", "email"]
    )
    stolen = await refresh(
        client, tokens["refresh_token"], headers=basic(thief.client_id, thief.secret)
    )
    assert_oauth_error(stolen, 400, "invalid_grant", tokens["refresh_token"])
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200


async def test_a_confidential_clients_refresh_needs_its_secret(
    client: httpx.AsyncClient, bastion: Bastion, registered: dict[str, str]
) -> None:
    """A confidential client's refresh token is refused without client
    authentication (``invalid_client``) and accepted with it."""
    app = await new_client(
        bastion, grants=["password", "refresh_token"], scopes=["profile", "email"]
    )
    tokens = await login(
        client,
        registered["email"],
        registered["password"],
        headers=basic(app.client_id, app.secret),
    )
    bare = await refresh(client, tokens["refresh_token"], client_id=app.client_id)
    assert_oauth_error(bare, 401, "invalid_client", tokens["refresh_token"])
    authed = await refresh(
        client,
        tokens["refresh_token"],
        client_id=app.client_id,
        client_secret=app.secret,
    )
    assert authed.status_code == 200, authed.text


async def test_a_client_without_the_refresh_grant_is_unauthorized_client(
    client: httpx.AsyncClient, bastion: Bastion, registered: dict[str, str]
) -> None:
    """A client registered for the password grant only cannot refresh."""
    app = await new_client(bastion, grants=["password"], scopes=["profile", "email"])
    headers = basic(app.client_id, app.secret)
    tokens = await login(client, registered["email"], registered["password"], headers=headers)
    assert "refresh_token" in tokens
    response = await refresh(client, tokens["refresh_token"], headers=headers)
    assert_oauth_error(response, 400, "unauthorized_client", tokens["refresh_token"])


async def test_repeated_grant_type_is_invalid_request(client: httpx.AsyncClient) -> None:
    """§3.2: a parameter sent twice is ``invalid_request``, not whichever value wins."""
    response = await client.post(
        "/oauth/token",
        content=b"grant_type=client_credentials&grant_type=password",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_oauth_error(response, 400, "invalid_request")


async def test_a_password_clients_user_tokens_stay_within_the_clients_scopes(
    client: httpx.AsyncClient, bastion: Bastion, registered: dict[str, str]
) -> None:
    """A user's token issued to a third-party password client carries only the
    scopes the client is registered for and no roles, at login and at refresh;
    a client registered for none of the user's permissions gets invalid_scope."""
    app = await new_client(bastion, grants=["password", "refresh_token"], scopes=["profile"])
    headers = basic(app.client_id, app.secret)
    tokens = await login(client, registered["email"], registered["password"], headers=headers)
    claims = await bastion.verifier.verify(tokens["access_token"])
    assert (claims.scopes, claims.roles) == (frozenset({"profile"}), ())
    renewed = await refresh(client, tokens["refresh_token"], headers=headers)
    assert renewed.status_code == 200, renewed.text
    claims = await bastion.verifier.verify(renewed.json()["access_token"])
    assert (claims.scopes, claims.roles) == (frozenset({"profile"}), ())

    unrelated = await new_client(bastion, grants=["password"], scopes=["content:read"])
    refused = await client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "username": registered["email"],
            "password": registered["password"],
        },
        headers=basic(unrelated.client_id, unrelated.secret),
    )
    assert_oauth_error(refused, 400, "invalid_scope", registered["password"])
