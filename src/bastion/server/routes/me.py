"""``/me``: the signed-in user, their password and their sessions.

Every route here acts on the caller only: ids in paths are checked against
the token's subject, and another user's session answers 404 exactly like an
unknown one (OWASP API1, BOLA).
"""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Security, status

from bastion.errors import AuthorizationError, InvalidCredentials
from bastion.guard import Principal, PrincipalSource, invalid_token_error
from bastion.server.context import client_context
from bastion.server.schemas import (
    PasswordChangeRequest,
    Problem,
    RevokedSessions,
    SessionOut,
    UserOut,
)
from bastion.stores.protocols import User
from bastion.tokens.grants import session_id_of

if TYPE_CHECKING:
    from bastion.core import Bastion


def current_user_dependency(
    bastion: "Bastion", scopes: list[str], source: PrincipalSource | None = None
) -> Callable[[Principal], Awaitable[tuple[Principal, User]]]:
    """A dependency giving the caller's principal and their (active) account.

    ``source`` is the credential dependency, a bearer token by default. A
    credential that outlived its user (deleted or disabled since) is a bad
    one: 401 ``invalid_token`` (RFC 6750 §3.1), never 404.
    """

    async def current_user(
        principal: Annotated[
            Principal, Security(source or bastion.current_principal, scopes=scopes)
        ],
    ) -> tuple[Principal, User]:
        try:
            user_id = UUID(principal.subject)
        except ValueError:
            raise invalid_token_error() from None
        user = await bastion.accounts.get_active_user(user_id)
        if user is None:
            raise invalid_token_error()
        return principal, user

    return current_user


def build(bastion: "Bastion") -> APIRouter:
    router = APIRouter(prefix="/me", tags=["me"])
    Caller = Annotated[tuple[Principal, User], Depends(current_user_dependency(bastion, []))]
    ProfileCaller = Annotated[
        tuple[Principal, User],
        Depends(current_user_dependency(bastion, ["profile"], bastion.any_principal)),
    ]

    @router.get("", response_model=UserOut)
    async def me(caller: ProfileCaller) -> UserOut:
        """The caller's account. Any credential of theirs will do: a bearer
        token, an API key or a browser session, each holding ``profile``."""
        return UserOut.of(caller[1])

    @router.post(
        "/password",
        status_code=status.HTTP_204_NO_CONTENT,
        responses={
            403: {"model": Problem, "description": "The current password is wrong"},
            422: {"model": Problem, "description": "The new password is refused"},
            429: {"model": Problem, "description": "Too many attempts"},
        },
    )
    async def change_password(
        body: PasswordChangeRequest, caller: Caller, request: Request
    ) -> None:
        """Change the password, proving the current one. Every session ends,
        this one included, and every access token issued until now stops
        working (strict mode): whoever knew the old password is out.

        Rate-limited per account, and a wrong current password counts as a
        failed login of the account from the caller's address (lockout)."""
        _, user = caller
        ip = client_context(request, bastion.trusted_proxies).ip_address
        try:
            await bastion.password_change.change(
                user, current=body.current_password, new=body.new_password, ip=ip
            )
        except InvalidCredentials as exc:
            # 403, not 401: the token is fine, the proof of the old password is not.
            raise AuthorizationError(exc.detail) from None

    @router.get("/sessions", response_model=list[SessionOut])
    async def sessions(caller: Caller) -> list[SessionOut]:
        """The caller's live sessions (one per login), newest first."""
        principal, user = caller
        current = session_id_of(principal.session_id)
        return [
            SessionOut.of(s, current=s.id == current)
            for s in await bastion.refresh.sessions(user.id)
        ]

    @router.delete(
        "/sessions/{session_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses={404: {"model": Problem, "description": "No such session of yours"}},
    )
    async def end_session(session_id: UUID, caller: Caller) -> None:
        """End one of the caller's sessions: its refresh token stops working."""
        _, user = caller
        await bastion.refresh.revoke_session(session_id, user_id=user.id)
        await bastion.audit.record("session.ended", actor=str(user.id), target=str(session_id))

    @router.post("/sessions/revoke-all", response_model=RevokedSessions)
    async def revoke_all(caller: Caller) -> RevokedSessions:
        """Sign out everywhere: every session ends and every access token
        issued until now stops working (strict mode)."""
        _, user = caller
        count = await bastion.revocations.revoke_everything(user.id, reason="user_request")
        return RevokedSessions(revoked=count)

    return router
