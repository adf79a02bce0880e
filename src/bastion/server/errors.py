"""The HTTP edge's single mapping from errors to responses.

- OAuth endpoints answer RFC 6749 §5.2 JSON (``error``, ``error_description``)
  with ``Cache-Control: no-store``; ``invalid_client`` adds
  ``WWW-Authenticate`` as §5.2 requires for a 401.
- Everything else answers RFC 9457 problem details
  (``application/problem+json``: ``type``, ``title``, ``status``, ``detail``).
- Request validation failures become 422 problem details listing the fields,
  without echoing the submitted values (they may hold a password).
- Anything unexpected becomes a bare 500 problem; the traceback goes to the
  log, never to the client.
- A rate limit (429) carries ``Retry-After`` and, when a quota policy refused
  it, ``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers:
  ``"token_ip";q=30;w=60`` and ``"token_ip";r=0;t=42``). The token endpoint
  answers it in the RFC 6749 §5.2 shape (:func:`oauth_rate_limited_response`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bastion.errors import (
    BastionError,
    InvalidClient,
    OAuthError,
    PasswordRejected,
    RateLimited,
)

logger = logging.getLogger("bastion.server")

PROBLEM_JSON = "application/problem+json"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """An RFC 9457 problem-details response (``type`` is ``about:blank``, §4.2.1)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if extra:
        body.update(extra)
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )


def oauth_description(text: str) -> str:
    """RFC 6749 §5.2: ``error_description`` may hold only %x20-21 / %x23-5B /
    %x5D-7E, so anything else (non-ASCII such as "§", quotes, backslashes,
    control characters) is dropped, not escaped."""
    return "".join(c for c in text if " " <= c <= "~" and c not in '"\\')


def oauth_error_response(error: OAuthError) -> JSONResponse:
    """RFC 6749 §5.2 error body, never cached."""
    headers = dict(NO_STORE)
    if isinstance(error, InvalidClient):
        headers["WWW-Authenticate"] = 'Basic realm="bastion"'
    return JSONResponse(
        {"error": error.error, "error_description": oauth_description(error.detail)},
        status_code=error.status_code,
        headers=headers,
    )


def rate_limit_headers(error: RateLimited) -> dict[str, str]:
    """``Retry-After`` (RFC 9110 §10.2.3), and the draft RateLimit fields when
    the refusal came from a named policy: its quota ``q`` per window ``w``
    seconds, nothing remaining (``r=0``), ``t`` seconds until one more passes."""
    headers = {"Retry-After": str(error.retry_after)}
    if error.policy is not None and error.quota is not None and error.window is not None:
        name = oauth_description(error.policy)
        headers["RateLimit-Policy"] = f'"{name}";q={error.quota};w={error.window}'
        headers["RateLimit"] = f'"{name}";r=0;t={error.retry_after}'
    return headers


def oauth_rate_limited_response(error: RateLimited) -> JSONResponse:
    """429 on an OAuth endpoint: RFC 6749 §5.2 registers no code for it, and
    clients of the token endpoint parse §5.2 bodies there, so the body is
    ``invalid_request`` with a description; the status and ``Retry-After`` say
    the rest. Never cached."""
    return JSONResponse(
        {"error": "invalid_request", "error_description": oauth_description(error.detail)},
        status_code=error.status_code,
        headers={**NO_STORE, **rate_limit_headers(error)},
    )


def bastion_error_response(error: BastionError) -> JSONResponse:
    if isinstance(error, OAuthError):
        return oauth_error_response(error)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(error, RateLimited):
        headers.update(rate_limit_headers(error))
    if isinstance(error, PasswordRejected):
        extra["reason"] = error.reason
    if error.status_code >= 500:
        logger.error("request failed: %s", error.detail)
    return problem_response(
        error.status_code, error.detail, title=error.title, headers=headers, extra=extra
    )


def validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Field locations and messages only: ``input`` and ``ctx`` are dropped so a
    rejected password or token is never reflected back (or into logs)."""
    return [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err.get("type")}
        for err in errors
        if isinstance(err, Mapping)
    ]


async def _on_bastion_error(request: Request, exc: Exception) -> JSONResponse:
    return bastion_error_response(cast(BastionError, exc))


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = cast(RequestValidationError, exc).errors()
    return problem_response(
        422,
        "The request body or parameters are not valid.",
        extra={"errors": validation_errors(errors)},
    )


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
    return problem_response(exc.status_code, detail, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "The server could not complete the request.")


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping on ``app``; embedded users call this on their own app."""
    app.add_exception_handler(BastionError, _on_bastion_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
