"""Assertions on the shape of the HTTP edge's error answers, shared by the
endpoint tests: RFC 9457 problem details, RFC 6749 §5.2 OAuth errors and
RFC 6750 §3 bearer challenges."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM_JSON = "application/problem+json"

OAUTH_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    }
)
"""The error codes RFC 6749 §5.2 registers for the token endpoint."""


def assert_no_leak(response: httpx.Response, *secrets: str) -> None:
    """Not a traceback, and none of ``secrets`` anywhere in the answer."""
    text = response.text
    assert "Traceback" not in text
    assert 'File "' not in text
    for secret in secrets:
        assert secret not in text
        assert all(secret not in value for value in response.headers.values())


def assert_problem(response: httpx.Response, status: int, *secrets: str) -> dict[str, Any]:
    """An RFC 9457 problem-details answer with ``status``; returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str)
    assert body["title"]
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert_no_leak(response, *secrets)
    return body


def assert_oauth_error(
    response: httpx.Response, status: int, error: str, *secrets: str
) -> dict[str, Any]:
    """An RFC 6749 §5.2 error answer, never cached; returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["error"] == error
    assert body["error"] in OAUTH_ERRORS
    assert set(body) <= {"error", "error_description", "error_uri"}
    description = body.get("error_description")
    assert description is None or isinstance(description, str)
    if description is not None:
        # RFC 6749 §5.2: %x20-21 / %x23-5B / %x5D-7E only.
        assert all(" " <= c <= "~" and c not in '"\\' for c in description), description
    assert_no_leak(response, *secrets)
    return body


def bearer_challenge(response: httpx.Response) -> dict[str, str]:
    """The auth-params of an RFC 6750 §3 ``WWW-Authenticate: Bearer`` header."""
    header = response.headers["www-authenticate"]
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer", header
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        name, _, value = part.partition("=")
        assert value.startswith('"'), header
        assert value.endswith('"'), header
        params[name] = value[1:-1]
    return params
