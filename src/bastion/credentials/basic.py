"""HTTP Basic (RFC 7617) with an OAuth client's id and secret, for internal
callers that cannot fetch tokens: ``curl -u bcl_…:secret``.

    @app.get("/internal/report")
    async def report(
        caller: Annotated[Principal, Security(bastion.basic_principal, scopes=["reports:read"])],
    ): ...

Off by default (``BASTION_HTTP_BASIC_ENABLED=false``): a long-lived secret on
every request is a weaker credential than a short-lived token, so an operator
opts in. Switched off, the guard answers exactly as if no credentials came
(401 with the challenge) and says why in the debug log.

Every attempt counts against the client IP's ``basic_ip`` limit; failures
count against the presented client id's ``basic_client`` limit, and once that
is spent every attempt for the id waits, the right secret too (429 with
``Retry-After``). The secret is checked in constant time
(:meth:`bastion.clients.ClientService.authenticate`).

Every refusal is a 401 with ``WWW-Authenticate: Basic realm="bastion",
charset="UTF-8"`` (RFC 7617 §2, §2.1) and one generic text, whatever was
wrong: a malformed header, an unknown id, a wrong secret.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from fastapi import HTTPException, Request
from fastapi.openapi.models import HTTPBase as HTTPBaseModel
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase

from bastion.clients import ClientService
from bastion.errors import (
    InsufficientScope,
    InvalidClient,
    RateLimited,
    ServiceUnavailable,
)
from bastion.guard import Principal, PrincipalDependency, require_permissions_of, require_roles_of
from bastion.ratelimit import LimitKey, RateLimiter, client_key, ip_key
from bastion.server.context import NO_PROXIES, TrustedProxies
from bastion.server.errors import rate_limit_headers

__all__ = ["MAX_BASIC_CREDENTIALS", "HttpBasicGuard", "decode_basic_credentials"]

logger = logging.getLogger("bastion.credentials.basic")

MAX_BASIC_CREDENTIALS: Final = 1024
"""Characters of the base64 token68 at most; a client id (64) and a generated
secret (43) need a fraction of it, even percent-encoded."""

Counter = Callable[[str, LimitKey], Awaitable[None]]

NOT_AUTHENTICATED: Final = "Not authenticated"
INVALID: Final = "Invalid client credentials."


def decode_basic_credentials(token68: str) -> tuple[str, str]:
    """RFC 7617 §2: ``base64(user-id ":" password)`` → ``(user_id, password)``.

    Strict: the alphabet and padding of RFC 4648 §4 only, UTF-8 (§2.1), a
    colon present, an id not empty, at most :data:`MAX_BASIC_CREDENTIALS`
    characters. :class:`ValueError` for anything else, with a reason for the
    debug log (never the credentials)."""
    if len(token68) > MAX_BASIC_CREDENTIALS:
        raise ValueError("credentials too long")
    try:
        raw = base64.b64decode(token68.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ValueError("not base64") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    user_id, colon, password = text.partition(":")
    if not colon:
        raise ValueError("no colon")
    if not user_id:
        raise ValueError("empty user-id")
    if any(c < " " or c == "\x7f" for c in text):
        raise ValueError("control characters")  # RFC 7617 §2: user-pass excludes CTLs
    return user_id, password


class HttpBasicGuard(SecurityBase):
    """A FastAPI security scheme turning HTTP Basic client credentials into a
    :class:`~bastion.guard.Principal` (``auth_method="basic"``, the client id
    as subject and ``client_id``, the client's allowed scopes, no roles).

    ``Security(guard, scopes=[...])`` compares scopes exactly (403 when one
    is missing); :meth:`require_permissions` honours wildcards.
    ``auto_error=False`` returns ``None`` when no Basic credentials came (or
    the guard is off); bad credentials are still a 401.
    """

    def __init__(
        self,
        clients: ClientService,
        limiter: RateLimiter,
        *,
        enabled: bool,
        proxies: TrustedProxies = NO_PROXIES,
        realm: str = "bastion",
        auto_error: bool = True,
        scheme_name: str | None = None,
        description: str | None = None,
    ) -> None:
        self.clients = clients
        self.limiter = limiter
        self.enabled = enabled
        self.proxies = proxies
        self.auto_error = auto_error
        self.scheme_name = scheme_name or type(self).__name__
        self.model = HTTPBaseModel(scheme="basic", description=description)
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'

    async def __call__(self, request: Request, security_scopes: SecurityScopes) -> Principal | None:
        authorization = request.headers.get("authorization")
        scheme, _, token68 = (authorization or "").partition(" ")
        if not self.enabled:
            logger.debug("HTTP Basic refused: switched off (BASTION_HTTP_BASIC_ENABLED=false)")
            return self._no_credentials()
        if scheme.lower() != "basic":
            return self._no_credentials()
        ip = self.proxies.client_ip(request)
        await self._limit(self.limiter.hit, "basic_ip", ip_key(ip))
        try:
            client_id, secret = decode_basic_credentials(token68.strip(" "))
        except ValueError as exc:
            logger.debug("HTTP Basic refused: %s", exc)
            raise self._unauthorized(INVALID) from None
        await self._limit(self.limiter.check, "basic_client", client_key(client_id))
        try:
            client = await self.clients.authenticate(client_id, secret)
        except InvalidClient:
            logger.debug("HTTP Basic refused: unknown client or wrong secret")
            await self._limit(self.limiter.hit, "basic_client", client_key(client_id))
            raise self._unauthorized(INVALID) from None
        except ServiceUnavailable:
            logger.warning("HTTP Basic: client store unavailable; refusing", exc_info=True)
            raise HTTPException(503, ServiceUnavailable.default_detail) from None
        if "client_credentials" not in client.grant_types:
            # Basic stands in for a client-credentials token: a client not
            # registered for that grant (a login app, say) is no caller here.
            logger.debug("HTTP Basic refused: client not registered for client_credentials")
            raise self._unauthorized(INVALID)
        required = security_scopes.scopes
        if required and not client.scopes.issuperset(required):
            logger.debug("HTTP Basic client lacks scopes %s", required)
            raise HTTPException(403, InsufficientScope.default_detail)
        return Principal(
            subject=client.client_id,
            scopes=client.scopes,
            roles=(),
            client_id=client.client_id,
            claims=None,
            token_id=None,
            auth_method="basic",
        )

    def require_roles(self, *roles: str) -> PrincipalDependency:
        """Clients carry no roles, so this admits nobody; here for symmetry
        with the other guards (``any_principal`` mixes them)."""
        return require_roles_of(self, *roles)

    def require_permissions(self, *permissions: str) -> PrincipalDependency:
        """Admits clients whose allowed scopes grant every one of ``permissions``
        (wildcards honoured, :func:`bastion.authz.permissions.allows`)."""
        return require_permissions_of(self, *permissions)

    def _no_credentials(self) -> Principal | None:
        """``None`` for optional use; otherwise the 401 challenge (RFC 7617 §2)."""
        if self.auto_error:
            raise self._unauthorized(NOT_AUTHENTICATED)
        return None

    def _unauthorized(self, detail: str) -> HTTPException:
        return HTTPException(401, detail, headers={"WWW-Authenticate": self.challenge})

    async def _limit(self, count: Counter, policy: str, key: LimitKey) -> None:
        try:
            await count(policy, key)
        except RateLimited as exc:
            logger.debug("HTTP Basic refused: rate limit %s", policy)
            raise HTTPException(429, exc.detail, headers=rate_limit_headers(exc)) from None
        except ServiceUnavailable:
            logger.warning("HTTP Basic: rate-limit store unavailable; refusing", exc_info=True)
            raise HTTPException(503, ServiceUnavailable.default_detail) from None
