"""Ending tokens: ``POST /auth/logout``, ``POST /oauth/revoke`` (RFC 7009) and
``POST /oauth/introspect`` (RFC 7662)."""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Form, Response, Security, status

from bastion.errors import InvalidClient, InvalidRequest, InvalidToken
from bastion.guard import Principal, invalid_token_error
from bastion.server.errors import NO_STORE
from bastion.server.routes.token import MAX_FIELD, OAuthRoute
from bastion.server.schemas import LogoutRequest, OAuthErrorBody, Problem
from bastion.tokens.grants import FIRST_PARTY_CLIENT_ID
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


def build(bastion: "Bastion") -> APIRouter:
    router = APIRouter(tags=["oauth"])
    oauth = APIRouter(prefix="/oauth", tags=["oauth"], route_class=OAuthRoute)

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
        },
    )
    async def revoke(
        token: FormField = None,
        token_type_hint: FormField = None,
        client_id: FormField = None,
    ) -> Response:
        """RFC 7009: revoke a refresh token (its whole family) or an access
        token. Unknown, invalid and already revoked tokens answer 200 too, so
        the endpoint tells nobody whether a token existed."""
        value = _token_param(token)
        if client_id is not None and client_id != FIRST_PARTY_CLIENT_ID:
            raise InvalidClient("Unknown client.")
        claims = None
        if not looks_like_refresh_token(value):
            try:
                claims = await bastion.verifier.verify(value)
            except InvalidToken:
                claims = None
        await bastion.revocations.revoke(
            value, hint=token_type_hint, access_token_claims=claims, client_id=client_id
        )
        return Response(status_code=200, headers=NO_STORE)

    @oauth.post(
        "/introspect",
        responses={
            400: {"model": OAuthErrorBody},
            401: {"model": Problem},
            403: {"model": Problem},
        },
    )
    async def introspect(
        response: Response,
        caller: Annotated[
            Principal, Security(bastion.current_principal, scopes=[INTROSPECT_SCOPE])
        ],
        token: FormField = None,
        token_type_hint: FormField = None,
    ) -> dict[str, Any]:
        """RFC 7662: whether a token is active, and its claims when it is.
        Only for callers holding the ``tokens:introspect`` scope (§4: the
        endpoint must not become a token-scanning oracle)."""
        del token_type_hint  # refresh tokens are recognised by their prefix
        response.headers.update(NO_STORE)
        return await bastion.introspection.introspect(_token_param(token))

    router.include_router(oauth)
    return router
