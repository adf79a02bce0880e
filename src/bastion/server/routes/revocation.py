"""Ending tokens: ``POST /auth/logout``, ``POST /oauth/revoke`` (RFC 7009) and
``POST /oauth/introspect`` (RFC 7662).

Both OAuth endpoints accept client authentication (``client_secret_basic`` or
``client_secret_post``, see :mod:`bastion.server.client_auth`): RFC 7009
§2.1 has the server authenticate the client and check that the token was
issued to it; RFC 7662 §2.1 lets a protected resource authenticate with its
client credentials instead of a bearer token."""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Form, Request, Response, Security, status

from bastion.authz.permissions import allows
from bastion.errors import InsufficientScope, InvalidClient, InvalidRequest, InvalidToken
from bastion.guard import BearerGuard, Principal, invalid_token_error, not_authenticated_error
from bastion.server.client_auth import ClientCredentials, read_client_credentials
from bastion.server.errors import NO_STORE
from bastion.server.routes.token import MAX_FIELD, OAuthRoute
from bastion.server.schemas import LogoutRequest, OAuthErrorBody, Problem
from bastion.tokens.refresh import looks_like_refresh_token

if TYPE_CHECKING:
    from bastion.core import Bastion

INTROSPECT_SCOPE = "tokens:introspect"

FormField = Annotated[str | None, Form()]


def _token_param(token: str | None) -> str:
    if not token:
        raise InvalidRequest("The token parameter is missing.")
    if len(token) > MAX_FIELD:
        raise InvalidRequest("The token parameter is too long.")
    return token


def _credentials(request: Request, client_id: str | None, secret: str | None) -> ClientCredentials:
    for name, value in (("client_id", client_id), ("client_secret", secret)):
        if value is not None and len(value) > MAX_FIELD:
            raise InvalidRequest(f"The {name} parameter is too long.")
    return read_client_credentials(request.headers.get("authorization"), client_id, secret)


def build(bastion: "Bastion") -> APIRouter:
    router = APIRouter(tags=["oauth"])
    oauth = APIRouter(prefix="/oauth", tags=["oauth"], route_class=OAuthRoute)
    # The introspection caller may come with a bearer token or with client
    # credentials, so the bearer is optional there; same scheme in OpenAPI.
    optional_bearer = BearerGuard(bastion.verifier, auto_error=False)
    optional_bearer.model = bastion.current_principal.model
    optional_bearer.scheme_name = bastion.current_principal.scheme_name

    @router.post(
        "/auth/logout",
        status_code=status.HTTP_204_NO_CONTENT,
        responses={401: {"model": Problem}, 422: {"model": Problem}},
    )
    async def logout(
        principal: Annotated[Principal, Security(bastion.current_principal)],
        body: LogoutRequest | None = None,
    ) -> None:
        """End this access token now (denylisted until it expires) and, when
        its refresh token is sent, that whole session."""
        if principal.claims is None:  # current_principal admits bearer tokens only
            raise invalid_token_error()
        await bastion.revocations.logout(principal.claims, body.refresh_token if body else None)

    @oauth.post(
        "/revoke",
        responses={
            200: {"description": "Revoked, or nothing to revoke (RFC 7009 §2.2)"},
            400: {"model": OAuthErrorBody},
            401: {"model": OAuthErrorBody, "description": "invalid_client"},
        },
    )
    async def revoke(
        request: Request,
        token: FormField = None,
        token_type_hint: FormField = None,
        client_id: FormField = None,
        client_secret: FormField = None,
    ) -> Response:
        """RFC 7009: revoke a refresh token (its whole family) or an access
        token. Unknown, invalid and already revoked tokens answer 200 too, so
        the endpoint tells nobody whether a token existed.

        A client that identifies itself (a confidential one must authenticate)
        revokes only tokens issued to it; another client's token answers 200
        and stays valid (§2.1, §2.2). Without any client, holding the token is
        the credential."""
        value = _token_param(token)
        credentials = _credentials(request, client_id, client_secret)
        owner = None
        if credentials.presented:
            client = await bastion.clients.identify(credentials.client_id, credentials.secret)
            owner = client.client_id
        claims = None
        if not looks_like_refresh_token(value):
            try:
                claims = await bastion.verifier.verify(value)
            except InvalidToken:
                claims = None
        await bastion.revocations.revoke(
            value, hint=token_type_hint, access_token_claims=claims, client_id=owner
        )
        return Response(status_code=200, headers=NO_STORE)

    @oauth.post(
        "/introspect",
        responses={
            400: {"model": OAuthErrorBody},
            401: {
                "model": Problem | OAuthErrorBody,
                "description": "No bearer (problem details), or invalid_client (RFC 6749 §5.2)",
            },
            403: {"model": Problem},
        },
    )
    async def introspect(
        request: Request,
        response: Response,
        caller: Annotated[Principal | None, Security(optional_bearer, scopes=[INTROSPECT_SCOPE])],
        token: FormField = None,
        token_type_hint: FormField = None,
        client_id: FormField = None,
        client_secret: FormField = None,
    ) -> dict[str, Any]:
        """RFC 7662: whether a token is active, and its claims when it is.
        Only for callers holding the ``tokens:introspect`` scope (§4: the
        endpoint must not become a token-scanning oracle): a bearer token
        with it, or a confidential client (Basic or ``client_secret`` field,
        §2.1) whose allowed scopes include it."""
        del token_type_hint  # refresh tokens are recognised by their prefix
        if caller is None:
            await _introspecting_client(_credentials(request, client_id, client_secret))
        response.headers.update(NO_STORE)
        return await bastion.introspection.introspect(_token_param(token))

    async def _introspecting_client(credentials: ClientCredentials) -> None:
        if not credentials.presented:
            raise not_authenticated_error()
        if credentials.secret is None:  # a public client proves nothing
            raise InvalidClient()
        client = await bastion.clients.authenticate(credentials.client_id or "", credentials.secret)
        if not allows(client.scopes, INTROSPECT_SCOPE):
            raise InsufficientScope([INTROSPECT_SCOPE])

    router.include_router(oauth)
    return router
