"""Register → token → /me, and the token checked by an independent library.

joserfc shares no code with PyJWT, so a token it accepts against the published
JWKS is a standard RFC 9068 token, not merely one Bastion can read back.
"""

from __future__ import annotations

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from bastion.clock import FrozenClock
from tests.conftest import ISSUER

pytestmark = pytest.mark.anyio


# RFC 9864 deprecates the polymorphic "EdDSA" name in favour of "Ed25519";
# RFC 9068 and most verifiers in the field still speak "EdDSA", so Bastion does.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
async def test_register_token_me_and_independent_verification(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    """The whole first-party flow works and the token verifies with joserfc."""
    registered = await client.post(
        "/auth/register",
        json={"email": "Grace@Example.com", "password": "anything but common 42"},
    )
    assert registered.status_code == 201
    user = registered.json()
    assert set(user) == {"id", "email", "username", "is_active", "email_verified", "created_at"}

    issued = await client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "username": "grace@example.com",
            "password": "anything but common 42",
        },
    )
    assert issued.status_code == 200
    assert issued.headers["cache-control"] == "no-store"
    body = issued.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert set(body["scope"].split()) == {"profile", "email"}

    me = await client.get("/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == user["id"]
    assert me.json()["email"] == "Grace@example.com"  # domain normalised, local part kept

    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert all("d" not in key for key in jwks["keys"])
    token = jwt.decode(body["access_token"], KeySet.import_key_set(jwks), algorithms=["EdDSA"])
    assert token.header["typ"] == "at+jwt"
    assert token.header["kid"] in {key["kid"] for key in jwks["keys"]}
    claims = JWTClaimsRegistry(
        now=int(clock.timestamp()),
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": ISSUER},
        sub={"essential": True, "value": user["id"]},
        exp={"essential": True},
        nbf={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
        client_id={"essential": True, "value": "bastion"},
    )
    claims.validate(token.claims)
    assert 899 < token.claims["exp"] - token.claims["iat"] <= 900


async def test_metadata_points_at_the_endpoints(client: httpx.AsyncClient) -> None:
    """RFC 8414 metadata names the issuer, token endpoint and JWKS."""
    response = await client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    meta = response.json()
    assert meta["issuer"] == ISSUER
    assert meta["token_endpoint"] == f"{ISSUER}/oauth/token"
    assert meta["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert meta["grant_types_supported"] == ["password", "refresh_token", "client_credentials"]
    assert {"profile", "email", "tokens:introspect"} <= set(meta["scopes_supported"])
    jwks = await client.get("/.well-known/jwks.json")
    assert "max-age" in jwks.headers["cache-control"]
