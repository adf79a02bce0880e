"""The standalone server that ``bastion serve`` runs.

Middleware, outermost first (Starlette runs the last added first):

1. ``CORSMiddleware``, only with ``BASTION_CORS_ORIGINS``: preflights are
   answered here and never reach authentication;
2. :class:`~bastion.security_headers.SecurityHeaders`: every answer below,
   refusals included, carries the hardening headers;
3. :class:`~bastion.middleware.RequestId`;
4. :class:`~bastion.security_headers.TrustedHosts` (``BASTION_TRUSTED_HOSTS``)
   and :class:`~bastion.security_headers.HttpsOnly` (``BASTION_HTTPS_REDIRECT``),
   both off by default;
5. :class:`~bastion.middleware.BodySizeLimit`: body size, JSON depth, header size.

Form fields are capped by FastAPI's own ``form_limits``.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from bastion._version import __version__
from bastion.clock import Clock
from bastion.core import Bastion
from bastion.errors import ConfigurationError
from bastion.middleware import BodySizeLimit, RequestId
from bastion.security_headers import HttpsOnly, SecurityHeaders, TrustedHosts, cors_problems
from bastion.server.errors import install_error_handlers
from bastion.settings import Settings

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
CORS_EXPOSED_HEADERS = [
    "X-Request-ID",
    "WWW-Authenticate",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
]


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    bastion: Bastion | None = None,
) -> FastAPI:
    """A FastAPI app serving one Bastion. Pass ``bastion`` to reuse an instance
    (tests do, to reach its services); otherwise one is built from ``settings``.

    Raises :class:`ConfigurationError` for a CORS configuration that is unsafe
    in any mode (``*`` with credentials) or can never match."""
    settings = bastion.settings if bastion is not None else settings or Settings()
    problems = cors_problems(settings.cors_origins, settings.cors_allow_credentials)
    if problems:
        raise ConfigurationError(problems)
    bastion = bastion or Bastion(settings, clock=clock)
    docs = settings.docs_visible
    app = FastAPI(
        title="Bastion",
        version=__version__,
        summary="Authentication and authorization server",
        lifespan=bastion.lifespan,
        docs_url=DOCS_URL if docs else None,
        redoc_url=REDOC_URL if docs else None,
        swagger_ui_oauth2_redirect_url=OAUTH2_REDIRECT_URL if docs else None,
        form_limits={
            "max_fields": settings.max_form_fields,
            "max_files": 0,  # no route takes uploads
            "max_part_size": settings.max_form_part_bytes,
        },
    )
    app.state.bastion = bastion
    install_error_handlers(app)
    app.include_router(bastion.router)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
        max_header_bytes=settings.max_header_bytes,
    )
    if settings.https_redirect:
        app.add_middleware(HttpsOnly)
    if settings.trusted_hosts:
        app.add_middleware(TrustedHosts, hosts=settings.trusted_hosts)
    app.add_middleware(RequestId)
    app.add_middleware(
        SecurityHeaders,
        hsts_max_age=settings.hsts_max_age if settings.hsts_enabled else None,
        docs_paths=(DOCS_URL, REDOC_URL, OAUTH2_REDIRECT_URL) if docs else (),
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            # X-CSRF-Token: a single-page app on a trusted origin sends it with
            # cookie-authenticated writes (bastion.csrf).
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-CSRF-Token"],
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=600,
        )
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory bastion.server.app:app_from_env``."""
    return create_app(Settings())
