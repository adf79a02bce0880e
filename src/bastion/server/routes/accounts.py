"""``POST /auth/register``: self-service sign-up."""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, status

from bastion.errors import FeatureDisabled
from bastion.ratelimit import ip_key
from bastion.server.context import client_context
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
            429: {"model": Problem, "description": "Too many sign-ups from this address"},
        },
    )
    async def register(body: RegisterRequest, request: Request) -> UserOut:
        """Create an account. The answer never contains the password hash.

        A taken email (compared case-insensitively) answers 409: registration
        is an enumeration oracle by nature, and until email verification exists
        a neutral answer would only confuse honest users.
        """
        if not bastion.settings.allow_registration:
            raise FeatureDisabled("Registration is switched off on this server.")
        context = client_context(request, bastion.trusted_proxies)
        await bastion.limiter.hit("register_ip", ip_key(context.ip_address))
        user = await bastion.accounts.register(
            email=str(body.email),
            password=body.password,
            username=body.username,
            roles=frozenset(bastion.settings.default_roles),
        )
        return UserOut.of(user)

    return router
