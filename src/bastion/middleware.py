"""ASGI middleware of the HTTP edge."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_TOO_LARGE = json.dumps(
    {
        "type": "about:blank",
        "title": "Content too large",
        "status": 413,
        "detail": "The request body is larger than this server accepts.",
    }
).encode()


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413 (RFC 9110 §15.5.14).

    Checks ``Content-Length`` up front and counts the bytes of chunked bodies as
    they stream, so an oversized upload is cut off without being buffered.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                # RFC 9110 §8.6: 1*DIGIT. int() would also take "-1", "+5", " 5"
                # and "1_0"; a malformed length is refused, not guessed at.
                too_large = not value.isdigit() or int(value) > self.max_bytes
                if too_large:
                    await _send_too_large(send)
                    return
                break

        received = 0
        response_started = False
        refused = False

        async def limited_receive() -> Message:
            # The 413 is sent here, not when the exception comes back out of
            # the app: frameworks catch errors raised while reading the body
            # (FastAPI turns them into its own 400), so it may never come back.
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if not response_started and not refused:
                        refused = True
                        await _send_too_large(send)
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return  # the 413 went out; the app's answer to the aborted read is dropped
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        # Answered in limited_receive already (or too late to answer at all).
        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, tracking_send)


class _BodyTooLarge(Exception):
    pass


async def _send_too_large(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(_TOO_LARGE)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _TOO_LARGE})


_REQUEST_ID_SHAPE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
request_id_var: ContextVar[str | None] = ContextVar("bastion_request_id", default=None)
"""The current request's id, for audit events and log lines."""


class RequestId:
    """Give every request an id: the caller's ``X-Request-ID`` when it is a
    sane token (a proxy's id then threads through), a fresh one otherwise.
    It is echoed in the response and stamped on audit events, so an operator
    can tie an event to a request in the access log."""

    def __init__(self, app: ASGIApp, header: str = "x-request-id") -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == self.header:
                candidate = value.decode("latin-1")
                if _REQUEST_ID_SHAPE.fullmatch(candidate):
                    request_id = candidate
                break
        request_id = request_id or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        encoded = request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (self.header, encoded)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
