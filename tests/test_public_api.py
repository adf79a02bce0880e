"""The public surface is what the README documents, and nothing leaks."""

from __future__ import annotations

import bastion
import bastion.guard
import bastion.testing

DOCUMENTED = {
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
}


def test_package_exports_exactly_the_documented_names() -> None:
    """`bastion.__all__` is the documented surface and every name resolves."""
    assert set(bastion.__all__) == DOCUMENTED
    for name in bastion.__all__:
        assert getattr(bastion, name) is not None


def test_guard_exports_what_a_resource_server_needs() -> None:
    """A resource server can build a guard from `bastion.guard` alone."""
    for name in ("BearerGuard", "TokenVerifier", "RemoteJWKS", "Principal", "KeySource"):
        assert name in bastion.guard.__all__
        assert getattr(bastion.guard, name) is getattr(bastion, name)


def test_testing_module_exports() -> None:
    """`bastion.testing` offers the token factory for users' own tests."""
    assert set(bastion.testing.__all__) == {"StaticKeys", "TokenFactory"}


def test_package_is_typed() -> None:
    """The `py.typed` marker ships, so users' type checkers read the hints."""
    from importlib.resources import files

    assert files("bastion").joinpath("py.typed").is_file()
