"""Bastion: secure-by-default authentication and authorization for FastAPI.

The public surface. A resource server needs only the guard names
(:class:`BearerGuard`, :class:`TokenVerifier`, :class:`RemoteJWKS`,
:class:`Principal`); an embedding app builds a :class:`Bastion` from
:class:`Settings` and includes ``bastion.router``.
"""

from __future__ import annotations

from bastion._version import __version__
from bastion.clock import Clock, FrozenClock, SystemClock
from bastion.core import Bastion
from bastion.credentials.any import AnyPrincipal
from bastion.credentials.api_key import ApiKeyGuard
from bastion.credentials.basic import HttpBasicGuard
from bastion.credentials.session_cookie import SessionGuard
from bastion.errors import (
    AuthenticationError,
    AuthorizationError,
    BastionError,
    ConfigurationError,
    Conflict,
    CsrfRejected,
    EmailAlreadyRegistered,
    InsufficientScope,
    InvalidApiKey,
    InvalidCredentials,
    InvalidToken,
    OAuthError,
    PasswordRejected,
)
from bastion.guard import BearerGuard, KeySource, Principal, RemoteJWKS, TokenVerifier
from bastion.jwt import AccessTokenClaims
from bastion.server.app import create_app
from bastion.server.errors import install_error_handlers
from bastion.settings import Settings

__all__ = [
    "AccessTokenClaims",
    "AnyPrincipal",
    "ApiKeyGuard",
    "AuthenticationError",
    "AuthorizationError",
    "Bastion",
    "BastionError",
    "BearerGuard",
    "Clock",
    "ConfigurationError",
    "Conflict",
    "CsrfRejected",
    "EmailAlreadyRegistered",
    "FrozenClock",
    "HttpBasicGuard",
    "InsufficientScope",
    "InvalidApiKey",
    "InvalidCredentials",
    "InvalidToken",
    "KeySource",
    "OAuthError",
    "PasswordRejected",
    "Principal",
    "RemoteJWKS",
    "SessionGuard",
    "Settings",
    "SystemClock",
    "TokenVerifier",
    "__version__",
    "create_app",
    "install_error_handlers",
]
