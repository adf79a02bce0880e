"""The one exception tree of Bastion's domain.

Services raise these; they know nothing of HTTP. The edge
(:mod:`bastion.server.errors` and :mod:`bastion.guard`) maps each class to a
status and a body in one place: RFC 6749 §5.2 JSON on OAuth endpoints, RFC 6750
§3 ``WWW-Authenticate`` on protected resources, RFC 9457 problem details
everywhere else. Messages here are safe to show to clients; causes that are not
(which check failed on a token, say) travel as ``__cause__`` to the debug log.

    BastionError
    ├── ConfigurationError            unsafe or invalid settings; refuses start
    ├── AuthenticationError           401
    │   ├── InvalidCredentials        wrong password or unknown user (same text)
    │   ├── InvalidToken              any bearer-token failure (generic text)
    │   └── InvalidApiKey             any API-key failure (generic text)
    ├── AuthorizationError            403
    │   ├── InsufficientScope         RFC 6750 §3.1 insufficient_scope
    │   └── CsrfRejected              cookie request without CSRF proof
    ├── NotFound                      404
    ├── Conflict                      409
    │   └── EmailAlreadyRegistered
    ├── InvalidInput                  422
    │   └── PasswordRejected          password policy (NIST SP 800-63B §3.1.1.2)
    ├── FeatureDisabled               403 (an operator switched it off)
    ├── RateLimited                   429
    ├── ServiceUnavailable            503
    └── OAuthError                    RFC 6749 §5.2 error responses
        ├── InvalidRequest            invalid_request
        ├── InvalidClient             invalid_client (401)
        ├── InvalidGrant              invalid_grant
        ├── UnauthorizedClient        unauthorized_client
        ├── UnsupportedGrantType      unsupported_grant_type
        └── InvalidScope              invalid_scope
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class BastionError(Exception):
    """Root of every error Bastion raises on purpose."""

    status_code: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    default_detail: ClassVar[str] = "The server could not complete the request."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class ConfigurationError(BastionError):
    """Settings that are invalid or unsafe for the chosen mode.

    ``problems`` lists one line per offending setting, naming it, so an operator
    can fix all of them in one go.
    """

    title = "Invalid configuration"

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("Refusing to start: " + "; ".join(self.problems))


class AuthenticationError(BastionError):
    status_code = 401
    title = "Unauthorized"
    default_detail = "Authentication is required."


class InvalidCredentials(AuthenticationError):
    """Wrong password, unknown user or disabled user: one message for all, so
    the answer does not tell an attacker which accounts exist."""

    default_detail = "Invalid username or password."


class InvalidToken(AuthenticationError):
    """Any failure to accept a bearer token. The text is deliberately generic
    (RFC 6750 §3.1 ``invalid_token``); the reason is in ``__cause__``."""

    default_detail = "The access token is invalid or has expired."


class InvalidApiKey(AuthenticationError):
    """Any failure to accept an API key: malformed, unknown, wrong secret,
    expired, revoked, or its owner disabled. One text for all, so the answer
    does not tell which ids exist; the reason goes to the debug log."""

    default_detail = "Invalid API key."


class AuthorizationError(BastionError):
    status_code = 403
    title = "Forbidden"
    default_detail = "You are not allowed to do this."


class InsufficientScope(AuthorizationError):
    """RFC 6750 §3.1: the token lacks a scope the resource requires."""

    default_detail = "The access token does not grant the required scope."

    def __init__(self, required: Sequence[str], detail: str | None = None) -> None:
        self.required = list(required)
        super().__init__(detail)


class CsrfRejected(AuthorizationError):
    """A state-changing request authenticated by the session cookie lacked
    its CSRF proof: a trusted ``Origin``/``Referer`` or the session's token
    (see :mod:`bastion.csrf`). Nothing was changed."""

    default_detail = "Cross-site request refused."


class NotFound(BastionError):
    status_code = 404
    title = "Not found"
    default_detail = "The resource does not exist."


class Conflict(BastionError):
    status_code = 409
    title = "Conflict"
    default_detail = "The request conflicts with the current state."


class EmailAlreadyRegistered(Conflict):
    default_detail = "An account with this email address already exists."


class InvalidInput(BastionError):
    status_code = 422
    title = "Invalid input"
    default_detail = "The request is not valid."


class PasswordRejected(InvalidInput):
    """The password breaks the policy; ``reason`` is a stable machine code."""

    title = "Password rejected"

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


class FeatureDisabled(BastionError):
    status_code = 403
    title = "Disabled"
    default_detail = "This feature is switched off on this server."


class RateLimited(BastionError):
    """Too many requests: ``retry_after`` seconds until one more would pass.

    ``policy``, ``quota`` and ``window`` name the rate-limit policy that refused
    the request (its quota per window of seconds), for the ``RateLimit`` and
    ``RateLimit-Policy`` headers; a lockout leaves them ``None`` and answers
    with ``Retry-After`` only.
    """

    status_code = 429
    title = "Too many requests"
    default_detail = "Too many requests; try again later."

    def __init__(
        self,
        retry_after: int,
        detail: str | None = None,
        *,
        policy: str | None = None,
        quota: int | None = None,
        window: int | None = None,
    ) -> None:
        self.retry_after = retry_after
        self.policy = policy
        self.quota = quota
        self.window = window
        super().__init__(detail)


class ServiceUnavailable(BastionError):
    status_code = 503
    title = "Service unavailable"
    default_detail = "A dependency of the server is unavailable."


class OAuthError(BastionError):
    """RFC 6749 §5.2 error; ``error`` is the registered code sent to the client."""

    status_code = 400
    title = "OAuth error"
    error: ClassVar[str] = "invalid_request"


class InvalidRequest(OAuthError):
    error = "invalid_request"
    default_detail = "The request is missing a parameter or is malformed."


class InvalidClient(OAuthError):
    """RFC 6749 §5.2: 401 when the client tried to authenticate."""

    status_code = 401
    error = "invalid_client"
    default_detail = "Client authentication failed."


class InvalidGrant(OAuthError):
    error = "invalid_grant"
    default_detail = "The grant is invalid, expired or revoked."


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"
    default_detail = "The client may not use this grant type."


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"
    default_detail = "The grant type is not supported."


class InvalidScope(OAuthError):
    error = "invalid_scope"
    default_detail = "The requested scope is invalid or exceeds what may be granted."
