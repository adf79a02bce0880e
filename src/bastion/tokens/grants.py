"""The token endpoint's grants (RFC 6749 §4), without HTTP.

Only the resource-owner password grant (§4.3) exists so far. RFC 9700 §2.4
says it MUST NOT be used by third-party clients, so it is offered only to the
built-in first-party client and can be switched off
(``BASTION_ALLOW_PASSWORD_GRANT=false``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from bastion.accounts import AccountService
from bastion.errors import InvalidClient, InvalidCredentials, InvalidGrant, InvalidScope
from bastion.scopes import format_scope, parse_scope
from bastion.tokens.access import AccessTokenIssuer, IssuedToken

FIRST_PARTY_CLIENT_ID = "bastion"
"""The built-in public client of Bastion's own login (Swagger UI, CLI, pages)."""


@dataclass(frozen=True, slots=True)
class PasswordGrantRequest:
    username: str
    password: str
    scope: str | None
    client_id: str | None


class GrantService:
    """Turns validated grant requests into issued tokens."""

    def __init__(
        self,
        accounts: AccountService,
        issuer: AccessTokenIssuer,
        *,
        scopes_supported: Collection[str],
        password_grant_enabled: bool,
    ) -> None:
        self._accounts = accounts
        self._issuer = issuer
        self._scopes_supported = frozenset(scopes_supported)
        self.password_grant_enabled = password_grant_enabled

    @property
    def grant_types(self) -> list[str]:
        return ["password"] if self.password_grant_enabled else []

    def grant_scopes(self, requested: str | None) -> frozenset[str]:
        """RFC 6749 §3.3: no scope requested means the default (every supported
        scope); an unknown scope is refused with ``invalid_scope``."""
        wanted = parse_scope(requested)
        if not wanted:
            return self._scopes_supported
        unknown = wanted - self._scopes_supported
        if unknown:
            raise InvalidScope(f"Unknown scope: {format_scope(unknown)}.")
        return wanted

    async def password(self, request: PasswordGrantRequest) -> IssuedToken:
        client_id = request.client_id or FIRST_PARTY_CLIENT_ID
        if client_id != FIRST_PARTY_CLIENT_ID:
            raise InvalidClient("Unknown client.")
        scopes = self.grant_scopes(request.scope)
        try:
            user = await self._accounts.authenticate(
                email=request.username, password=request.password
            )
        except InvalidCredentials as exc:
            raise InvalidGrant("Invalid username or password.") from exc
        return await self._issuer.issue(subject=str(user.id), scopes=scopes, client_id=client_id)
