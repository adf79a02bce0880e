"""The token endpoint's grants (RFC 6749 §4 and §6), without HTTP.

The resource-owner password grant (§4.3) exists for Bastion's own first-party
login only: RFC 9700 §2.4 says it MUST NOT be used by third-party clients, so
only clients registered for it may use it (the built-in ``bastion`` client by
default), and it can be switched off (``BASTION_ALLOW_PASSWORD_GRANT=false``).
Every grant that logs a user in also starts a refresh-token family (a
session), and the refresh-token grant (§6) rotates it. The client credentials
grant (§4.4) gives a confidential client a token for itself: no user, no
roles, no refresh token.

The caller (the token endpoint) has already identified or authenticated the
client (:meth:`bastion.clients.ClientService.identify`); these methods check
what that client may do (§5.2 ``unauthorized_client``).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from bastion.accounts import AccountService
from bastion.audit import AuditLog
from bastion.authz import AuthorizationService, narrow
from bastion.authz.permissions import allows
from bastion.clients import FIRST_PARTY_CLIENT_ID, OAuthClient
from bastion.errors import InvalidCredentials, InvalidGrant, InvalidScope, UnauthorizedClient
from bastion.login import PasswordLogin
from bastion.scopes import parse_scope
from bastion.tokens.access import AccessTokenIssuer, IssuedToken
from bastion.tokens.refresh import ClientContext, IssuedRefreshToken, RefreshTokenService

__all__ = ["FIRST_PARTY_CLIENT_ID", "GrantService", "TokenPair", "session_id_of"]


@dataclass(frozen=True, slots=True)
class TokenPair:
    access: IssuedToken
    refresh: IssuedRefreshToken


class GrantService:
    """Turns validated grant requests into issued tokens."""

    def __init__(
        self,
        accounts: AccountService,
        authz: AuthorizationService,
        issuer: AccessTokenIssuer,
        refresh: RefreshTokenService,
        *,
        password_grant_enabled: bool,
        audit: AuditLog,
        login: PasswordLogin,
    ) -> None:
        self._audit = audit
        self._accounts = accounts
        self._login = login
        self._authz = authz
        self._issuer = issuer
        self._refresh = refresh
        self.password_grant_enabled = password_grant_enabled

    @property
    def grant_types(self) -> list[str]:
        password = ["password"] if self.password_grant_enabled else []
        return [*password, "refresh_token", "client_credentials"]

    async def password(
        self,
        *,
        username: str,
        password: str,
        scope: str | None,
        client: OAuthClient,
        context: ClientContext,
    ) -> TokenPair:
        """RFC 6749 §4.3, for clients registered for it only (RFC 9700 §2.4)."""
        client_id = _may_use(client, "password").client_id
        try:
            user = await self._login.verify(
                username=username, password=password, client_id=client_id, ip=context.ip_address
            )
        except InvalidCredentials as exc:
            raise InvalidGrant("Invalid username or password.") from exc
        # RFC 6749 §3.3: the requested scopes the user's roles allow; all of
        # them when none is asked; invalid_scope only when nothing is left.
        # Checked after the password, so scopes tell a stranger nothing.
        roles, scopes = await self._authz.grant_scopes(user.id, scope)
        roles, scopes = _limited_to_client(client, roles, scopes)
        refresh = await self._refresh.start(
            user_id=user.id, client_id=client_id, scopes=scopes, context=context
        )
        pair = TokenPair(await self._access_token(refresh, roles, scopes), refresh)
        await self._audit.record(
            "login.succeeded",
            actor=str(user.id),
            target=str(refresh.session.id),
            client_id=client_id,
            ip=context.ip_address,
            scope=pair.access.scope,
        )
        return pair

    async def refresh_token(
        self,
        *,
        refresh_token: str,
        scope: str | None,
        client: OAuthClient,
        context: ClientContext,
    ) -> TokenPair:
        """RFC 6749 §6, with rotation: the answer carries a new refresh token.
        The token is bound to the client it was issued to: another client's
        is ``invalid_grant``."""
        client_id = _may_use(client, "refresh_token").client_id
        refresh = await self._refresh.rotate(
            refresh_token, client_id=client_id, scope=scope, context=context
        )
        user_id = refresh.session.user_id
        if await self._accounts.get_active_user(user_id) is None:
            await self._refresh.revoke_session(refresh.session.id)
            raise InvalidGrant("The refresh token is invalid.")
        # Roles are read afresh at every refresh: a role taken away since the
        # login narrows the new token instead of living on in the session.
        effective = await self._authz.effective(user_id)
        roles, scopes = _limited_to_client(
            client, effective.roles, narrow(refresh.scopes, effective.permissions)
        )
        pair = TokenPair(await self._access_token(refresh, roles, scopes), refresh)
        await self._audit.record(
            "token.refreshed",
            actor=str(user_id),
            target=str(refresh.session.id),
            ip=context.ip_address,
            scope=pair.access.scope,
        )
        return pair

    async def client_credentials(
        self, *, client: OAuthClient, scope: str | None, context: ClientContext
    ) -> IssuedToken:
        """RFC 6749 §4.4: an access token for the client itself.

        Confidential clients only (§4.4: "MUST only be used by confidential
        clients"), registered for the grant. The scope is the requested one
        when the client's allowed scopes grant all of it, every allowed scope
        when none is requested (§3.3), and ``invalid_scope`` when any requested
        scope is not allowed: a service asking for more than it was given is
        misconfigured, and a silently narrower token would fail later and
        further from the cause. No refresh token (§4.4.3): the client can
        always ask again."""
        if not client.is_confidential:
            raise UnauthorizedClient("Only confidential clients may use client_credentials.")
        _may_use(client, "client_credentials")
        wanted = parse_scope(scope)
        if any(not allows(client.scopes, s) for s in wanted):
            raise InvalidScope("The client may not request some of these scopes.")
        scopes = narrow(wanted, client.scopes) if wanted else client.scopes
        token = await self._issuer.issue(
            subject=client.client_id, scopes=scopes, client_id=client.client_id
        )
        await self._audit.record(
            "token.client_credentials",
            actor=client.client_id,
            target=token.jti,
            ip=context.ip_address,
            scope=token.scope,
        )
        return token

    async def _access_token(
        self, refresh: IssuedRefreshToken, roles: frozenset[str], scopes: frozenset[str]
    ) -> IssuedToken:
        session = refresh.session
        return await self._issuer.issue(
            subject=str(session.user_id),
            scopes=scopes,
            roles=sorted(roles),
            client_id=session.client_id,
            extra={"sid": str(session.id)},
        )


def _may_use(client: OAuthClient, grant_type: str) -> OAuthClient:
    """RFC 6749 §5.2 ``unauthorized_client``: the grant is not one of the client's."""
    if grant_type not in client.grant_types:
        raise UnauthorizedClient(f"This client may not use the {grant_type} grant.")
    return client


def session_id_of(claims_sid: object) -> UUID | None:
    """The ``sid`` claim as a session id, when it is one."""
    if not isinstance(claims_sid, str):
        return None
    try:
        return UUID(claims_sid)
    except ValueError:
        return None


def _limited_to_client(
    client: OAuthClient, roles: frozenset[str], scopes: frozenset[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """A user's token issued to a client other than Bastion's own carries no
    more than that client is registered for: its scopes are narrowed to the
    client's (``invalid_scope`` when nothing is left, RFC 6749 §3.3), and it
    carries no roles, which would admit it to role-guarded routes whatever
    its scope says."""
    if client.client_id == FIRST_PARTY_CLIENT_ID:
        return roles, scopes
    limited = narrow(scopes, client.scopes)
    if not limited:
        raise InvalidScope("The client may not be granted any of these scopes.")
    return frozenset(), limited
