"""``POST /oauth/token``: the OAuth 2.0 token endpoint (RFC 6749 §3.2).

Every failure here answers in the RFC 6749 §5.2 shape, including the ones
FastAPI would otherwise answer itself (a body that is not a form, a field
that fails validation), through :class:`OAuthRoute`. Successful answers carry
``Cache-Control: no-store`` (§5.1).

The form mirrors FastAPI's ``OAuth2PasswordRequestForm`` field for field, so
the Swagger UI "Authorize" button works, but takes ``grant_type`` as free text:
an unknown grant must answer ``unsupported_grant_type``, not a validation error.
"""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from bastion.errors import BastionError, InvalidRequest, RateLimited, UnsupportedGrantType
from bastion.ratelimit import ip_key
from bastion.server.client_auth import read_client_credentials
from bastion.server.context import client_context
from bastion.server.errors import (
    NO_STORE,
    bastion_error_response,
    oauth_error_response,
    oauth_rate_limited_response,
)
from bastion.server.schemas import OAuthErrorBody, TokenResponse

if TYPE_CHECKING:
    from bastion.core import Bastion

MAX_FIELD = 4096
"""Characters; longer values are ``invalid_request`` before any work is done."""


class OAuthRoute(APIRoute):
    """A route whose framework-level failures are RFC 6749 §5.2 errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def oauth_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError:
                return oauth_error_response(InvalidRequest("The request is malformed."))
            except StarletteHTTPException as exc:
                if exc.status_code == 400:  # an unparseable body
                    return oauth_error_response(InvalidRequest("The request body is malformed."))
                raise
            except RateLimited as exc:
                return oauth_rate_limited_response(exc)
            except BastionError as exc:
                # Not an RFC 6749 error (a 503 while the database is down, say):
                # problem details as elsewhere, but never cached here either.
                response = bastion_error_response(exc)
                response.headers.update(NO_STORE)
                return response

        return oauth_handler


FormField = Annotated[str | None, Form()]


def _unsupported(grant: str) -> UnsupportedGrantType:
    """Name the refused grant type only when it is short and made of characters
    an RFC 6749 §5.2 ``error_description`` may carry; never reflect the rest."""
    if len(grant) <= 64 and all(" " < c <= "~" and c not in '"\\' for c in grant):
        return UnsupportedGrantType(f"The grant type '{grant}' is not supported.")
    return UnsupportedGrantType()


PARAMETERS = (
    "grant_type",
    "username",
    "password",
    "refresh_token",
    "scope",
    "client_id",
    "client_secret",
)


async def reject_repeated(request: Request, names: tuple[str, ...] = PARAMETERS) -> None:
    """RFC 6749 §3.2: parameters "MUST NOT be included more than once"; a
    repeated one (``grant_type=password&grant_type=client_credentials``) is
    ``invalid_request`` rather than whichever value a parser keeps."""
    form = await request.form()  # already parsed for the route: cached
    for name in names:
        if len(form.getlist(name)) > 1:
            raise InvalidRequest(f"The {name} parameter is repeated.")


def _required(name: str, value: str | None) -> str:
    if not value:
        raise InvalidRequest(f"The {name} parameter is missing.")
    return value


def build(bastion: "Bastion") -> APIRouter:
    router = APIRouter(prefix="/oauth", tags=["oauth"], route_class=OAuthRoute)

    @router.post(
        "/token",
        response_model=TokenResponse,
        response_model_exclude_none=True,
        responses={
            400: {"model": OAuthErrorBody, "description": "RFC 6749 §5.2 error"},
            401: {"model": OAuthErrorBody, "description": "invalid_client"},
            429: {"model": OAuthErrorBody, "description": "Rate limited (Retry-After)"},
        },
    )
    async def token(
        request: Request,
        response: Response,
        grant_type: FormField = None,
        username: FormField = None,
        password: FormField = None,
        refresh_token: FormField = None,
        scope: FormField = None,
        client_id: FormField = None,
        client_secret: FormField = None,
    ) -> TokenResponse:
        """Issue an access token and a refresh token.

        ``grant_type=password`` (RFC 6749 §4.3) is for Bastion's own first-party
        login only (RFC 9700 §2.4); third-party apps get other grants.
        ``grant_type=refresh_token`` (§6) spends the refresh token and returns
        its successor; a spent one presented again revokes its whole family.
        ``grant_type=client_credentials`` (§4.4) gives a confidential client an
        access token for itself, without a refresh token.

        Clients authenticate with ``Authorization: Basic`` (id and secret
        form-urlencoded, then base64: §2.3.1) or with ``client_id`` and
        ``client_secret`` fields, never both. Public clients send ``client_id``
        alone; none at all means Bastion's own client, ``bastion``.

        Every request counts against the client address's limit; a password
        also against the account's, and against its failed-login lockout.
        """
        context = client_context(request, bastion.trusted_proxies)
        await bastion.limiter.hit("token_ip", ip_key(context.ip_address))
        fields = (grant_type, username, password, refresh_token, scope, client_id, client_secret)
        if any(value is not None and len(value) > MAX_FIELD for value in fields):
            raise InvalidRequest("A parameter is too long.")
        await reject_repeated(request)
        credentials = read_client_credentials(
            request.headers.get("authorization"), client_id, client_secret
        )
        grant = _required("grant_type", grant_type)
        if grant not in bastion.grants.grant_types:
            raise _unsupported(grant)
        client = await bastion.clients.identify(credentials.client_id, credentials.secret)
        response.headers.update(NO_STORE)
        if grant == "client_credentials":
            token = await bastion.grants.client_credentials(
                client=client, scope=scope, context=context
            )
            return TokenResponse(
                access_token=token.access_token, expires_in=token.expires_in, scope=token.scope
            )
        if grant == "password":
            pair = await bastion.grants.password(
                username=_required("username", username),
                password=_required("password", password),
                scope=scope,
                client=client,
                context=context,
            )
        else:
            pair = await bastion.grants.refresh_token(
                refresh_token=_required("refresh_token", refresh_token),
                scope=scope,
                client=client,
                context=context,
            )
        return TokenResponse(
            access_token=pair.access.access_token,
            expires_in=pair.access.expires_in,
            scope=pair.access.scope,
            refresh_token=pair.refresh.token,
        )

    return router
