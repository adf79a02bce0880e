"""``GET /me``: the signed-in user, behind the guard."""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from fastapi import APIRouter, Security

from bastion.guard import Principal, invalid_token_error
from bastion.server.schemas import UserOut

if TYPE_CHECKING:
    from bastion.core import Bastion


def build(bastion: "Bastion") -> APIRouter:
    router = APIRouter(tags=["me"])

    @router.get("/me", response_model=UserOut)
    async def me(
        principal: Annotated[Principal, Security(bastion.current_principal, scopes=["profile"])],
    ) -> UserOut:
        """The user the token belongs to.

        A token that outlived its user (deleted or disabled since) is a bad
        token: 401 ``invalid_token`` (RFC 6750 §3.1), never 404.
        """
        try:
            user_id = UUID(principal.subject)
        except ValueError:
            raise invalid_token_error() from None
        user = await bastion.accounts.get_active_user(user_id)
        if user is None:
            raise invalid_token_error()
        return UserOut.of(user)

    return router
