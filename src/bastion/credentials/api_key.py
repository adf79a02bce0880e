"""The API-key scheme: ``X-API-Key: bst_<id>_<secret>`` into a :class:`Principal`.

    @app.get("/reports")
    async def reports(
        p: Annotated[Principal, Security(bastion.api_key_principal, scopes=["reports:read"])],
    ): ...

A ``fastapi.security`` scheme like :class:`~bastion.guard.BearerGuard`, so
OpenAPI lists it (``apiKey`` in the header). Answers:

- no key: 401 with a challenge when ``auto_error`` (RFC 9110 §11.6.1: a 401
  carries ``WWW-Authenticate``; API keys have no registered scheme, so the
  challenge reads ``ApiKey header="X-API-Key"``), else ``None``;
- a key that is malformed, unknown, wrong, expired, revoked, or whose owner is
  disabled: 401 "Invalid API key." with the same challenge, whatever
  ``auto_error`` says: a broken credential never becomes an anonymous caller;
- a scope missing from ``Security(..., scopes=[...])``: 403
  ``insufficient_scope`` (exact names, like the bearer guard; use
  :meth:`ApiKeyGuard.require_permissions` for wildcards);
- the key store unreachable: 503, never a pass.

The query-string and cookie locations are off unless configured
(``BASTION_API_KEY_QUERY_PARAM``, ``BASTION_API_KEY_COOKIE``): a query string
is written to access logs, proxies and browser history, and a cookie is an
ambient credential that a cross-site form would send along (the CSRF defence
covers browser sessions, not keys in cookies).
"""

from __future__ import annotations

import logging
from typing import Final

from fastapi import HTTPException, Request
from fastapi.openapi.models import APIKey, APIKeyIn
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase

from bastion.api_keys import ApiKeyService
from bastion.errors import InvalidApiKey, ServiceUnavailable
from bastion.guard import (
    NOT_AUTHENTICATED,
    Principal,
    PrincipalDependency,
    insufficient_scope_error,
    require_permissions_of,
    require_roles_of,
)
from bastion.settings import Settings

__all__ = ["DEFAULT_HEADER", "ApiKeyGuard", "api_key_challenge"]

logger = logging.getLogger("bastion.credentials.api_key")

DEFAULT_HEADER: Final = "X-API-Key"


def api_key_challenge(header: str) -> str:
    """The ``WWW-Authenticate`` value of a 401 (RFC 9110 §11.6.1): the
    ``ApiKey`` scheme naming the header to send, as a quoted-string."""
    name = "".join(c for c in header if c.isascii() and (c.isalnum() or c in "-_"))
    return f'ApiKey header="{name}"'


class ApiKeyGuard(SecurityBase):
    """A FastAPI security scheme that turns an API key into a :class:`Principal`
    (``auth_method="api_key"``, no roles, scopes = the key's permissions
    narrowed to its owner's current ones)."""

    def __init__(
        self,
        service: ApiKeyService,
        *,
        header_name: str = DEFAULT_HEADER,
        query_param: str | None = None,
        cookie_name: str | None = None,
        auto_error: bool = True,
        scheme_name: str | None = None,
        description: str | None = None,
    ) -> None:
        self.service = service
        self.header_name = header_name
        self.query_param = query_param
        self.cookie_name = cookie_name
        self.auto_error = auto_error
        self.scheme_name = scheme_name or type(self).__name__
        self.model = APIKey(
            **{"in": APIKeyIn.header},
            name=header_name,
            description=description
            or "An API key, `bst_<id>_<secret>`, created at `POST /me/api-keys`.",
        )
        self._challenge = {"WWW-Authenticate": api_key_challenge(header_name)}

    @classmethod
    def from_settings(
        cls,
        service: ApiKeyService,
        settings: Settings,
        *,
        auto_error: bool = True,
        scheme_name: str | None = "api_key",
    ) -> ApiKeyGuard:
        """The guard configured by ``BASTION_API_KEY_HEADER``, ``_QUERY_PARAM``
        and ``_COOKIE``."""
        return cls(
            service,
            header_name=settings.api_key_header,
            query_param=settings.api_key_query_param,
            cookie_name=settings.api_key_cookie,
            auto_error=auto_error,
            scheme_name=scheme_name,
        )

    def optional(self) -> ApiKeyGuard:
        """The same scheme with ``auto_error=False``: ``None`` when no key was
        sent (for :func:`any_principal`-style dependencies), still 401 for a
        bad one."""
        return type(self)(
            self.service,
            header_name=self.header_name,
            query_param=self.query_param,
            cookie_name=self.cookie_name,
            auto_error=False,
            scheme_name=self.scheme_name,
            description=self.model.description,
        )

    def presented(self, request: Request) -> str | None:
        """The key the request carries (header first), or ``None``. An empty
        value counts as sent: it fails as a bad key, not as no key."""
        key = request.headers.get(self.header_name)
        if key is None and self.query_param is not None:
            key = request.query_params.get(self.query_param)
        if key is None and self.cookie_name is not None:
            key = request.cookies.get(self.cookie_name)
        return key

    async def __call__(self, request: Request, security_scopes: SecurityScopes) -> Principal | None:
        key = self.presented(request)
        if key is None:
            if self.auto_error:
                raise HTTPException(401, NOT_AUTHENTICATED, headers=self._challenge)
            return None
        principal = await self.authenticate(key)
        required = security_scopes.scopes
        if required and not principal.scopes.issuperset(required):
            logger.debug("API key lacks scopes %s", required)
            raise insufficient_scope_error(required)
        return principal

    async def authenticate(self, key: str) -> Principal:
        """The key's principal, or the HTTP answer: 401 with the challenge for
        any bad key, 503 when the store cannot say."""
        try:
            return await self.service.authenticate(key)
        except InvalidApiKey as exc:
            if exc.__cause__ is not None:
                logger.debug("API key rejected: %s", exc.__cause__)
            raise HTTPException(401, exc.detail, headers=self._challenge) from None
        except ServiceUnavailable:
            logger.warning("API key store unavailable; refusing the request", exc_info=True)
            raise HTTPException(503, ServiceUnavailable.default_detail) from None

    # ------------------------------------------------------------------ roles and permissions

    def require_roles(self, *roles: str) -> PrincipalDependency:
        """For symmetry with the bearer guard only: API keys carry no roles,
        so this admits no API key (403). Scope keys with permissions and use
        :meth:`require_permissions`."""
        return require_roles_of(self, *roles)

    def require_permissions(self, *permissions: str) -> PrincipalDependency:
        """A dependency admitting keys whose (narrowed) permissions grant every
        one of ``permissions``, wildcards honoured; 403 ``insufficient_scope``
        otherwise, 401 without a key."""
        return require_permissions_of(self, *permissions)
