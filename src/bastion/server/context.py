"""What the edge tells services about where a request came from."""

from __future__ import annotations

from fastapi import Request

from bastion.tokens.refresh import ClientContext

MAX_USER_AGENT = 512


def client_context(request: Request) -> ClientContext:
    """User agent (truncated) and the socket's peer address. Forwarded headers
    are not trusted here; a trusted-proxy setting belongs to the hardening work."""
    user_agent = request.headers.get("user-agent")
    return ClientContext(
        user_agent=user_agent[:MAX_USER_AGENT] if user_agent else None,
        ip_address=request.client.host if request.client else None,
    )
