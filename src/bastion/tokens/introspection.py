"""Token introspection (RFC 7662).

Answers ``{"active": false}`` and nothing else for anything that is not a
currently usable token: unknown, malformed, expired, revoked, spent (§2.2 says
an inactive answer must not tell why). Access tokens are checked like the
strict guard checks them; refresh tokens against their family.
"""

from __future__ import annotations

from typing import Any

from bastion.errors import InvalidToken
from bastion.guard import TokenVerifier
from bastion.tokens.refresh import RefreshTokenService, looks_like_refresh_token
from bastion.tokens.revocation import RevocationChecker

INACTIVE: dict[str, Any] = {"active": False}


class IntrospectionService:
    def __init__(
        self,
        verifier: TokenVerifier,
        checker: RevocationChecker,
        refresh: RefreshTokenService,
    ) -> None:
        self._verifier = verifier
        self._checker = checker
        self._refresh = refresh

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 §2.2 response for ``token``. The hint is not needed: a
        refresh token is recognised by its prefix."""
        if looks_like_refresh_token(token):
            return await self._refresh_token(token)
        try:
            claims = await self._verifier.verify(token)
        except InvalidToken:
            return dict(INACTIVE)
        if await self._checker.is_revoked(claims):
            return dict(INACTIVE)
        answer: dict[str, Any] = {
            "active": True,
            "token_type": "access_token",
            "scope": " ".join(sorted(claims.scopes)),
            "client_id": claims.client_id,
            "sub": claims.subject,
            "iss": claims.issuer,
            "aud": list(claims.audience),
            "exp": int(claims.expires_at),
            "iat": int(claims.issued_at),
        }
        if claims.not_before is not None:
            answer["nbf"] = int(claims.not_before)
        if claims.jwt_id is not None:
            answer["jti"] = claims.jwt_id
        return answer

    async def _refresh_token(self, token: str) -> dict[str, Any]:
        found = await self._refresh.inspect(token)
        if found is None:
            return dict(INACTIVE)
        record, session = found
        return {
            "active": True,
            "token_type": "refresh_token",
            # What the token can still obtain: its family's scope (RFC 6749 §6),
            # not the possibly narrower scope of the rotation that made it.
            "scope": session.scope,
            "client_id": session.client_id,
            "sub": str(session.user_id),
            "exp": int(session.expires_at.timestamp()),
            "iat": int(record.created_at.timestamp()),
        }
