"""``POST /auth/register``: self-service sign-up."""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
from typing import TYPE_CHECKING

from fastapi import APIRouter, status

from bastion.errors import FeatureDisabled
from bastion.server.schemas import Problem, RegisterRequest, UserOut

if TYPE_CHECKING:
    from bastion.core import Bastion


def build(bastion: "Bastion") -> APIRouter:
    router = APIRouter(prefix="/auth", tags=["accounts"])

    @router.post(
        "/register",
        status_code=status.HTTP_201_CREATED,
        response_model=UserOut,
        responses={
            403: {"model": Problem, "description": "Registration is switched off"},
            409: {"model": Problem, "description": "The email is already registered"},
            422: {"model": Problem, "description": "Invalid input or password refused"},
        },
    )
    async def register(body: RegisterRequest) -> UserOut:
        """Create an account. The answer never contains the password hash.

        A taken email (compared case-insensitively) answers 409: registration
        is an enumeration oracle by nature, and until email verification exists
        a neutral answer would only confuse honest users.
        """
        if not bastion.settings.allow_registration:
            raise FeatureDisabled("Registration is switched off on this server.")
        user = await bastion.accounts.register(
            email=str(body.email),
            password=body.password,
            username=body.username,
            roles=frozenset(bastion.settings.default_roles),
        )
        return UserOut.of(user)

    return router
