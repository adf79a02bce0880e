"""The HTTP edge: one module per concern, all built around one :class:`Bastion`."""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
from typing import TYPE_CHECKING

from fastapi import APIRouter

from bastion.server.routes import (
    accounts,
    admin,
    api_keys,
    browser_session,
    health,
    me,
    pages,
    revocation,
    token,
    well_known,
)

if TYPE_CHECKING:
    from bastion.core import Bastion


def build_router(bastion: "Bastion") -> APIRouter:
    router = APIRouter()
    for module in (
        accounts,
        token,
        revocation,
        browser_session,
        me,
        api_keys,
        admin,
        well_known,
        health,
    ):
        router.include_router(module.build(bastion))
    if bastion.settings.pages_enabled:
        router.include_router(pages.build(bastion))
    return router
