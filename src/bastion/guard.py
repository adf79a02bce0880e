"""The guard: what a resource server imports to accept Bastion's access tokens.

    keys = RemoteJWKS("https://auth.example.com/.well-known/jwks.json")
    verifier = TokenVerifier(keys, issuer="https://auth.example.com",
                             audience="https://api.example.com")
    current_principal = BearerGuard(verifier)

    @app.get("/notes")
    async def notes(p: Annotated[Principal, Security(current_principal, scopes=["notes:read"])]):
        ...

:class:`BearerGuard` is a ``fastapi.security`` scheme, so OpenAPI shows it and
scopes go through ``Security(..., scopes=[...])``. It reads the RFC 6750 §2.1
``Authorization: Bearer`` header and answers per RFC 6750 §3: 401 with
``WWW-Authenticate: Bearer`` when no token came, 401 ``invalid_token`` for a
bad one, 403 ``insufficient_scope`` when a scope is missing. Never 422, never
500: a key source that fails makes the token invalid (and is logged).

:class:`TokenVerifier` remembers tokens it has accepted until their ``exp``, so
a repeated request costs a dictionary lookup, not a signature check.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from fastapi import HTTPException, Request, Security
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.openapi.models import OAuth2 as OAuth2Model
from fastapi.openapi.models import OAuthFlowPassword, OAuthFlows
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase

from bastion.authz.permissions import allows, validate_permission, validate_role_name
from bastion.clock import Clock, SystemClock
from bastion.errors import (
    AuthorizationError,
    InsufficientScope,
    InvalidInput,
    InvalidToken,
    ServiceUnavailable,
)
from bastion.jwt import MAX_TOKEN_BYTES, AccessTokenClaims, verify_access_token
from bastion.keys import KeySource, RemoteJWKS

__all__ = [
    "AccessTokenClaims",
    "AuthMethod",
    "BearerChallenge",
    "BearerGuard",
    "KeySource",
    "Principal",
    "PrincipalDependency",
    "PrincipalSource",
    "RemoteJWKS",
    "RevocationCheck",
    "TokenVerifier",
    "forbidden_error",
    "insufficient_scope_error",
    "invalid_token_error",
    "not_authenticated_error",
    "require_permissions_of",
    "require_roles_of",
    "www_authenticate",
]

logger = logging.getLogger("bastion.guard")

NOT_AUTHENTICATED: Final = "Not authenticated"


AuthMethod = Literal["bearer", "api_key", "session", "basic"]
"""How a :class:`Principal` proved itself: an access token (RFC 6750), an API
key, a browser session cookie, or HTTP Basic with a client secret (RFC 7617)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, whatever credential proved it.

    Every way in (bearer token, API key, session cookie, HTTP Basic) ends in
    this one type, so a route's checks (scopes, roles, ownership) do not care
    how the caller authenticated; ``auth_method`` says it when that matters.
    """

    subject: str
    """A user id, or a client id for machine callers (client credentials, Basic)."""

    scopes: frozenset[str]
    """Granted scopes: the token's ``scope``, an API key's permissions (narrowed
    to its owner's current ones), a session user's permissions."""

    roles: tuple[str, ...]
    """Role names (a token's ``roles`` claim, a session user's roles). API keys
    and clients carry none: they are scoped by permissions only."""

    client_id: str
    """The OAuth client the credential belongs to (``bastion`` for first-party)."""

    claims: AccessTokenClaims | None = field(repr=False)
    """Everything verified in a bearer token; ``None`` for other credentials."""

    token_id: str | None
    """The token's ``jti``, the API key's id, for audit logs and revocation."""

    auth_method: AuthMethod = "bearer"
    """Which credential proved this principal."""

    session_id: str | None = None
    """The login session behind the credential (a token's ``sid`` claim, the
    browser session), when there is one."""

    @classmethod
    def from_claims(cls, claims: AccessTokenClaims) -> Principal:
        sid = claims.raw.get("sid")
        return cls(
            subject=claims.subject,
            scopes=claims.scopes,
            roles=claims.roles,
            client_id=claims.client_id,
            claims=claims,
            token_id=claims.jwt_id,
            session_id=sid if isinstance(sid, str) else None,
        )

    def has_scopes(self, *scopes: str) -> bool:
        """Whether every one of ``scopes`` was granted."""
        return self.scopes.issuperset(scopes)


class RevocationCheck(Protocol):
    """Strict mode's extra question; :class:`bastion.tokens.revocation.RevocationChecker`
    answers it from the shared denylist and watermarks."""

    async def is_revoked(self, claims: AccessTokenClaims) -> bool: ...


class TokenVerifier:
    """Verifies access tokens against a :class:`KeySource` and caches successes.

    The cache is keyed by the exact token string, bounded to ``cache_size``
    entries (the oldest goes first; 0 disables it) and an entry is never
    served at or after the token's ``exp``, checked against the clock on every
    hit. Only accepted tokens are cached: a negative cache would be filled with
    strings an attacker chooses, and rejection is already cheap before the
    signature (shape, header, unknown ``kid``) or bounded by the key source's
    refetch limit after it.

    Caching trades one thing: a token stays accepted until its ``exp`` even if
    its key is withdrawn from the JWKS early. Access tokens are short-lived
    (RFC 9068 §5 suggests so), which bounds that window; a denylist (strict
    mode) must be consulted outside this cache.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        leeway: int = 30,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        clock: Clock | None = None,
        cache_size: int = 10_000,
        revocations: RevocationCheck | None = None,
    ) -> None:
        if leeway < 0 or cache_size < 0 or max_token_bytes <= 0:
            raise ValueError("leeway and cache_size must be >= 0, max_token_bytes > 0")
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.max_token_bytes = max_token_bytes
        self._clock: Clock = clock or SystemClock()
        self._cache_size = cache_size
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self.revocations = revocations
        """Set: strict mode, every request also asks whether the token was revoked."""

    def cached(self, token: str) -> Principal | None:
        """The principal of an already verified, unexpired token; no I/O, no crypto."""
        entry = self._cache.get(token)
        if entry is None:
            return None
        if self._clock.timestamp() < entry[0]:
            return entry[1]
        self._cache.pop(token, None)
        return None

    async def authenticate(self, token: str) -> Principal:
        """Verify ``token`` (or find it cached); :class:`InvalidToken` otherwise."""
        principal = self.cached(token)
        if principal is not None:
            return principal
        claims = await verify_access_token(
            token,
            self.keys,
            issuer=self.issuer,
            audience=self.audience,
            clock=self._clock,
            leeway=self.leeway,
            max_token_bytes=self.max_token_bytes,
        )
        principal = Principal.from_claims(claims)
        if self._cache_size and self._clock.timestamp() < claims.expires_at:
            cache = self._cache
            while len(cache) >= self._cache_size:
                cache.popitem(last=False)
            cache[token] = (claims.expires_at, principal)
        return principal

    async def verify(self, token: str) -> AccessTokenClaims:
        """The verified claims of ``token``; :class:`InvalidToken` on any failure."""
        claims = (await self.authenticate(token)).claims
        if claims is None:  # cannot happen: this verifier makes principals from claims
            raise InvalidToken()
        return claims

    def clear_cache(self) -> None:
        self._cache.clear()


# ------------------------------------------------------------------ HTTP answers


def _quoted(value: str) -> str:
    """RFC 6750 §3: attribute values use %x20-21 / %x23-5B / %x5D-7E only, so
    quotes, backslashes and control characters are dropped, not escaped."""
    return "".join(c for c in value if " " <= c <= "~" and c not in '"\\')


def www_authenticate(
    error: str | None = None, description: str | None = None, scope: str | None = None
) -> str:
    """The one place the RFC 6750 §3 ``WWW-Authenticate`` challenge is built."""
    params = []
    if error:
        params.append(f'error="{_quoted(error)}"')
    if description:
        params.append(f'error_description="{_quoted(description)}"')
    if scope:
        params.append(f'scope="{_quoted(scope)}"')
    return "Bearer " + ", ".join(params) if params else "Bearer"


class BearerChallenge(HTTPException):
    """An RFC 6750 §3 error answer: status, a generic ``detail`` and the
    ``WWW-Authenticate`` challenge. ``error`` is the §3.1 code, if any."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        error: str | None = None,
        description: str | None = None,
        scope: str | None = None,
    ) -> None:
        super().__init__(
            status_code,
            detail,
            headers={"WWW-Authenticate": www_authenticate(error, description, scope)},
        )
        self.error = error


def not_authenticated_error() -> BearerChallenge:
    """401 without an error code: no credentials came (RFC 6750 §3.1, last paragraph)."""
    return BearerChallenge(401, NOT_AUTHENTICATED)


def invalid_token_error() -> BearerChallenge:
    """401 ``invalid_token`` (RFC 6750 §3.1), with the same generic text for every cause."""
    detail = InvalidToken.default_detail
    return BearerChallenge(401, detail, error="invalid_token", description=detail)


def forbidden_error() -> HTTPException:
    """403 for an authenticated caller who lacks a role: no challenge (another
    token would not help the way a broader scope would) and generic text."""
    return HTTPException(403, AuthorizationError.default_detail)


def insufficient_scope_error(required: list[str]) -> BearerChallenge:
    """403 ``insufficient_scope`` naming the scopes the resource needs (RFC 6750 §3.1)."""
    detail = InsufficientScope.default_detail
    return BearerChallenge(
        403,
        detail,
        error="insufficient_scope",
        description=detail,
        scope=" ".join(dict.fromkeys(required)),
    )


# ------------------------------------------------------------------ the scheme


class BearerGuard(SecurityBase):
    """A FastAPI security scheme that turns a bearer token into a :class:`Principal`.

    With ``token_url`` the OpenAPI document describes an OAuth2 password flow,
    so Swagger UI's Authorize button can log in; without it, HTTP bearer.
    ``scopes`` (name → description) documents the scopes in that flow.

    ``auto_error=False`` returns ``None`` when no bearer token was sent, for
    optional authentication; a token that *was* sent and is bad is still a 401,
    and a missing scope still a 403: a broken credential never silently turns
    into an anonymous caller.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        auto_error: bool = True,
        scheme_name: str | None = None,
        description: str | None = None,
        token_url: str | None = None,
        scopes: dict[str, str] | None = None,
    ) -> None:
        self.verifier = verifier
        self.auto_error = auto_error
        self.scheme_name = scheme_name or type(self).__name__
        if token_url is not None:
            self.model = OAuth2Model(
                flows=OAuthFlows(
                    password=OAuthFlowPassword(tokenUrl=token_url, scopes=dict(scopes or {}))
                ),
                description=description,
            )
        else:
            self.model = HTTPBearerModel(bearerFormat="JWT", description=description)

    async def __call__(self, request: Request, security_scopes: SecurityScopes) -> Principal | None:
        # Hot path: one header read, one dict lookup on a cached token.
        authorization = request.headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if token and scheme.lower() == "bearer":
                principal = self.verifier.cached(token)
                if principal is None:
                    principal = await self._authenticate(token)
                if self.verifier.revocations is not None:
                    await self._check_not_revoked(self.verifier.revocations, principal)
                required = security_scopes.scopes
                if required and not principal.scopes.issuperset(required):
                    logger.debug("bearer token lacks scopes %s", required)
                    raise insufficient_scope_error(required)
                return principal
        if self.auto_error:
            raise not_authenticated_error()
        return None

    async def _check_not_revoked(self, revocations: RevocationCheck, principal: Principal) -> None:
        """Strict mode. An unreachable revocation store fails closed with 503:
        the token may be fine, but nobody can say so right now."""
        try:
            claims = principal.claims
            revoked = claims is not None and await revocations.is_revoked(claims)
        except ServiceUnavailable:
            logger.warning("revocation state unavailable; refusing the request", exc_info=True)
            raise HTTPException(503, ServiceUnavailable.default_detail) from None
        if revoked:
            logger.debug("bearer token rejected: revoked")
            raise invalid_token_error()

    async def _authenticate(self, token: str) -> Principal:
        if " " in token:  # RFC 6750 §2.1: exactly one b64token after the scheme
            logger.debug("bearer token rejected: more than one credential in the header")
            raise invalid_token_error()
        try:
            return await self.verifier.authenticate(token)
        except InvalidToken as exc:
            logger.debug("bearer token rejected: %s", exc.__cause__ or exc)
            raise invalid_token_error() from None
        except Exception:
            # A bug or an outage, not a bad token: say so loudly, but fail closed.
            logger.warning("bearer token verification failed unexpectedly", exc_info=True)
            raise invalid_token_error() from None

    # ------------------------------------------------------------------ roles and permissions

    def require_roles(self, *roles: str) -> PrincipalDependency:
        """A dependency that admits callers holding *every* one of ``roles`` and
        returns their :class:`Principal`; 403 otherwise (401 without a token).

        Hierarchy-aware through the token: Bastion puts the role closure in the
        ``roles`` claim (an admin's token says ``admin editor user``), so
        ``require_roles("editor")`` admits admins without a database. Names are
        checked now, so a typo fails at import time with :class:`ValueError`.
        Use per route (``Depends(guard.require_roles("editor"))``) or per
        router (``APIRouter(dependencies=[Depends(...)])``); either way the
        route shows this scheme in OpenAPI."""
        return require_roles_of(self, *roles)

    def require_permissions(self, *permissions: str) -> PrincipalDependency:
        """A dependency that admits callers whose token scope grants *every* one
        of ``permissions`` and returns their :class:`Principal`.

        Unlike ``Security(guard, scopes=[...])``, which compares scopes exactly,
        this honours wildcards: a token with ``invoices:*`` may do
        ``invoices:write`` (:func:`bastion.authz.permissions.allows`). A miss is
        403 ``insufficient_scope`` naming every required permission (RFC 6750
        §3.1). The permissions appear as this scheme's scopes on the route in
        OpenAPI. Names are checked now: :class:`ValueError` for a malformed one."""
        return require_permissions_of(self, *permissions, documented_in=self)


PrincipalSource = Callable[..., Awaitable[Principal | None]]
"""A FastAPI dependency that yields the caller's :class:`Principal`, or ``None``
when no credential came and it does not insist (``auto_error=False``)."""

PrincipalDependency = Callable[..., Awaitable[Principal]]
"""What :func:`require_roles_of` and :func:`require_permissions_of` return: a
FastAPI dependency resolving to the checked :class:`Principal`."""


def require_roles_of(source: PrincipalSource, *roles: str) -> PrincipalDependency:
    """``require_roles`` for any principal dependency (a guard, ``any_principal``)."""
    required = _checked("role", roles, validate_role_name)

    # The defaults below are FastAPI markers, the form that works here:
    # under PEP 563 an ``Annotated[..., Security(source)]`` string could not
    # see the local ``source``.
    async def require_roles(
        principal: Principal | None = Security(source),  # noqa: B008 (FastAPI marker)
    ) -> Principal:
        if principal is None:  # auto_error=False and no credential: still a 401 here
            raise not_authenticated_error()
        held = principal.roles
        if not all(role in held for role in required):
            logger.debug("caller lacks roles %s", required)
            raise forbidden_error()
        return principal

    return require_roles


def require_permissions_of(
    source: PrincipalSource, *permissions: str, documented_in: BearerGuard | None = None
) -> PrincipalDependency:
    """``require_permissions`` for any principal dependency; ``documented_in``
    names the OAuth2 scheme whose scopes OpenAPI lists the permissions under."""
    required = _checked("permission", permissions, validate_permission)

    async def require_permissions(
        principal: Principal | None = Security(source),  # noqa: B008 (FastAPI marker)
    ) -> Principal:
        if principal is None:
            raise not_authenticated_error()
        granted = principal.scopes
        if not all(allows(granted, permission) for permission in required):
            logger.debug("caller lacks permissions %s", required)
            raise insufficient_scope_error(list(required))
        return principal

    if documented_in is None:
        return require_permissions
    documented = _DocumentedScopes(documented_in)

    async def require_documented_permissions(
        principal: Principal = Security(require_permissions),  # noqa: B008 (FastAPI marker)
        _scopes: None = Security(documented, scopes=list(required)),
    ) -> Principal:
        return principal

    return require_documented_permissions


def _checked(kind: str, names: tuple[str, ...], validate: Callable[[str], str]) -> tuple[str, ...]:
    if not names:
        raise ValueError(f"name at least one {kind}")
    try:
        return tuple(dict.fromkeys(validate(name) for name in names))
    except InvalidInput as exc:
        raise ValueError(f"invalid {kind} in {names!r}: {exc.detail}") from exc


class _DocumentedScopes(SecurityBase):
    """Puts required permissions into the OpenAPI security requirement of a
    guard's scheme (same name, same model, so FastAPI merges the scopes) and
    checks nothing: the permission dependency does, with wildcards."""

    def __init__(self, guard: BearerGuard) -> None:
        self.model = guard.model
        self.scheme_name = guard.scheme_name

    async def __call__(self) -> None:
        return None
