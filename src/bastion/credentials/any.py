"""``any_principal``: one dependency for routes that every kind of caller may use.

    Caller = Annotated[Principal, Security(bastion.any_principal, scopes=["notes:read"])]

    @app.get("/notes")
    async def notes(p: Caller):
        ...  # p.auth_method is "bearer", "api_key" or "session"

It accepts a bearer access token, an API key or the browser session cookie
and gives the same :class:`~bastion.guard.Principal` whichever came. The
precedence is fixed: the ``Authorization`` header, then the API-key header,
then the cookie. A credential that is present decides alone: if it is bad
the answer is 401, and the next one is *not* tried, so a broken token cannot
be papered over by an ambient cookie, and a request that carries a bearer
token or an API key is not a cookie request (no CSRF check: a browser never
attaches those by itself). An ``Authorization`` header with another scheme
than ``Bearer`` is refused too, with the bare ``Bearer`` challenge.

OpenAPI lists each scheme as an alternative (the operation's ``security`` is
a list of one requirement per scheme, any one of which suffices): the
signature FastAPI reads names one marker per scheme, with the scheme's own
name and model, that checks nothing; :meth:`AnyPrincipal.__call__` does the
work in the order above. Scopes given to ``Security(..., scopes=[...])`` are
compared exactly and shown under every alternative.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

from fastapi import Request, Security
from fastapi.openapi.models import SecurityBase as SecurityBaseModel
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase

from bastion.credentials.session_cookie import SessionGuard
from bastion.guard import (
    BearerGuard,
    Principal,
    PrincipalDependency,
    not_authenticated_error,
    require_permissions_of,
    require_roles_of,
)

__all__ = ["AnyPrincipal", "KeyScheme"]


class KeyScheme(Protocol):
    """What :class:`AnyPrincipal` needs of an API-key scheme
    (:class:`bastion.credentials.api_key.ApiKeyGuard`)."""

    model: SecurityBaseModel
    scheme_name: str

    def presented(self, request: Request) -> str | None: ...

    async def __call__(
        self, request: Request, security_scopes: SecurityScopes
    ) -> Principal | None: ...


class _Documented(SecurityBase):
    """Puts a scheme among the route's OpenAPI security alternatives (same
    name and model, so the components merge) and checks nothing."""

    def __init__(self, scheme: SecurityBase | KeyScheme) -> None:
        self.model = scheme.model
        self.scheme_name = scheme.scheme_name

    async def __call__(self) -> None:
        return None


class AnyPrincipal:
    """A bearer token, an API key or a session cookie, in that order (see
    the module docstring). ``api_key`` may be ``None`` (no API keys here).

    With ``auto_error=False`` a request with no credential at all gives
    ``None``; a bad credential is still a 401."""

    __signature__: inspect.Signature

    def __init__(
        self,
        bearer: BearerGuard,
        api_key: KeyScheme | None,
        session: SessionGuard,
        *,
        auto_error: bool = True,
    ) -> None:
        self.bearer = bearer
        self.api_key = api_key
        self.session = session
        self.auto_error = auto_error
        self._bearer = BearerGuard(
            bearer.verifier, auto_error=False, scheme_name=bearer.scheme_name
        )
        schemes: list[SecurityBase | KeyScheme] = [bearer]
        if api_key is not None:
            schemes.append(api_key)
        schemes.append(session)
        # What FastAPI reads instead of __call__'s own signature: the request,
        # the scopes, and one documenting marker per scheme.
        keyword = inspect.Parameter.KEYWORD_ONLY
        self.__signature__ = inspect.Signature(
            [
                inspect.Parameter("request", keyword, annotation=Request),
                inspect.Parameter("security_scopes", keyword, annotation=SecurityScopes),
                *(
                    inspect.Parameter(
                        f"_scheme_{index}",
                        keyword,
                        default=Security(_Documented(scheme)),
                        annotation=None,
                    )
                    for index, scheme in enumerate(schemes)
                ),
            ],
            return_annotation=Principal | None,
        )

    async def __call__(
        self, *, request: Request, security_scopes: SecurityScopes, **_markers: Any
    ) -> Principal | None:
        if "authorization" in request.headers:
            principal = await self._bearer(request, security_scopes)
            if principal is None:
                # An Authorization header, but no bearer token in it: 401 all
                # the same (no fall-through), with the bare challenge RFC 6750
                # §3.1 asks for when no bearer credential came.
                raise not_authenticated_error()
            return principal
        if self.api_key is not None and self.api_key.presented(request) is not None:
            principal = await self.api_key(request, security_scopes)
            if principal is None:  # cannot happen: a presented key is accepted or refused
                raise not_authenticated_error()
            return principal
        if self.session.presented(request) is not None:
            return await self.session(request, security_scopes)
        if self.auto_error:
            raise not_authenticated_error()
        return None

    def optional(self) -> AnyPrincipal:
        """The same dependency with ``auto_error=False``."""
        return type(self)(self.bearer, self.api_key, self.session, auto_error=False)

    def require_roles(self, *roles: str) -> PrincipalDependency:
        """Callers holding every one of ``roles``, however they authenticated
        (API keys carry no roles, so they never pass); 403 otherwise."""
        return require_roles_of(self, *roles)

    def require_permissions(self, *permissions: str) -> PrincipalDependency:
        """Callers whose permissions grant every one of ``permissions``,
        wildcards honoured; 403 ``insufficient_scope`` otherwise."""
        return require_permissions_of(self, *permissions)
