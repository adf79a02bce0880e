"""Discovery: the JWKS (RFC 7517 §5) and authorization-server metadata (RFC 8414)."""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Response

from bastion.server.client_auth import AUTH_METHODS

if TYPE_CHECKING:
    from bastion.core import Bastion

JWKS_PATH = "/.well-known/jwks.json"


def build(bastion: "Bastion") -> APIRouter:
    router = APIRouter(prefix="/.well-known", tags=["discovery"])
    settings = bastion.settings

    @router.get("/jwks.json")
    async def jwks(response: Response) -> dict[str, Any]:
        """Public keys only. Cached by clients for the key cache interval, which
        is also how long a rotation takes to reach every verifier."""
        response.headers["Cache-Control"] = f"public, max-age={settings.key_cache_ttl}"
        return await bastion.keys.jwks()

    @router.get("/oauth-authorization-server")
    async def metadata(response: Response) -> dict[str, Any]:
        """RFC 8414 §2 metadata; later endpoints add themselves here."""
        response.headers["Cache-Control"] = "public, max-age=3600"
        issuer = settings.issuer
        return {
            "issuer": issuer,
            "token_endpoint": f"{issuer}/oauth/token",
            "jwks_uri": f"{issuer}{JWKS_PATH}",
            "grant_types_supported": bastion.grants.grant_types,
            "response_types_supported": [],
            "scopes_supported": sorted(
                {
                    p
                    for role in (await bastion.authz.roles_by_name()).values()
                    for p in role.permissions
                }
            ),
            # "none": public clients such as the built-in `bastion` (RFC 8414 §2).
            "token_endpoint_auth_methods_supported": [*AUTH_METHODS, "none"],
            "revocation_endpoint": f"{issuer}/oauth/revoke",
            "revocation_endpoint_auth_methods_supported": [*AUTH_METHODS, "none"],
            "introspection_endpoint": f"{issuer}/oauth/introspect",
            # Registered client authentication methods only (RFC 8414 §2); a
            # bearer token with `tokens:introspect` works too (RFC 7662 §2.1).
            "introspection_endpoint_auth_methods_supported": list(AUTH_METHODS),
        }

    return router
