"""The standalone server that ``bastion serve`` runs."""

from __future__ import annotations

from fastapi import FastAPI

from bastion._version import __version__
from bastion.clock import Clock
from bastion.core import Bastion
from bastion.middleware import BodySizeLimit, RequestId
from bastion.server.errors import install_error_handlers
from bastion.settings import Settings


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    bastion: Bastion | None = None,
) -> FastAPI:
    """A FastAPI app serving one Bastion. Pass ``bastion`` to reuse an instance
    (tests do, to reach its services); otherwise one is built from ``settings``."""
    bastion = bastion or Bastion(settings, clock=clock)
    app = FastAPI(
        title="Bastion",
        version=__version__,
        summary="Authentication and authorization server",
        lifespan=bastion.lifespan,
    )
    app.state.bastion = bastion
    install_error_handlers(app)
    app.include_router(bastion.router)
    app.add_middleware(BodySizeLimit, max_bytes=bastion.settings.max_body_bytes)
    app.add_middleware(RequestId)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory bastion.server.app:app_from_env``."""
    return create_app(Settings())
