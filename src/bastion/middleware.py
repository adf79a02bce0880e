"""ASGI middleware of the HTTP edge."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _problem(status: int, title: str, detail: str) -> bytes:
    return json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()


_TOO_LARGE = _problem(
    413, "Content too large", "The request body is larger than this server accepts."
)
_TOO_DEEP = _problem(400, "Bad request", "The JSON body is nested too deeply.")
_HEADERS_TOO_LARGE = _problem(
    431,
    "Request header fields too large",
    "The request headers are larger than this server accepts.",
)

MAX_JSON_DEPTH = 32
"""Default nesting limit of JSON request bodies; Bastion's own are at most 3 deep."""

# A JSON string, escapes included (RFC 8259 §7), and a run of brackets.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET_RUN = re.compile(rb"[\[{]+|[\]}]+")


def json_nesting_exceeds(data: bytes, limit: int) -> bool:
    """Whether JSON text ``data`` nests arrays and objects deeper than ``limit``.

    Cheap on ordinary bodies: fewer than ``limit`` opening brackets in all
    cannot nest that deep, and ``bytes.count`` runs in C. Otherwise string
    literals are cut out first (a ``"[[["`` inside a string is not nesting)
    and the brackets are counted run by run, so even 64 KiB of ``[`` costs
    two regex matches. Malformed JSON may be over- or under-counted; the
    parser refuses it anyway."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    for run in _BRACKET_RUN.finditer(_JSON_STRING.sub(b"", data)):
        length = run.end() - run.start()
        if run.group()[0] in b"[{":
            depth += length
            if depth > limit:
                return True
        else:
            depth -= length
    return False


def _is_json(content_type: bytes | None) -> bool:
    """The bodies FastAPI hands to ``json.loads``: no content type at all,
    ``application/json`` or ``application/*+json``."""
    if content_type is None:
        return True
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413 (RFC 9110 §15.5.14),
    JSON bodies nested deeper than ``max_json_depth`` with 400, and requests
    whose header fields add up to more than ``max_header_bytes`` with 431
    (RFC 6585 §5).

    Checks ``Content-Length`` up front and counts the bytes of chunked bodies as
    they stream, so an oversized upload is cut off without being buffered. A
    JSON body is checked when its last chunk arrives, before the app parses
    it: ``json.loads`` recurses once per level, and a deep enough body would
    cost a ``RecursionError`` (FastAPI's "error parsing the body") after
    spending the work. Form fields are limited by FastAPI's ``form_limits``.

    The header cap guards what the app reads (``X-Request-ID``,
    ``User-Agent``, ``X-Forwarded-For``, ...), not the server's
    memory: uvicorn's default httptools parser buffers headers of any size
    before the app sees them (h11 stops near ``--h11-max-incomplete-event-size``,
    16 KiB by default), so the first cap belongs in the proxy in front.
    ``Authorization`` is left out of the sum: the guard refuses a token over
    its own size cap by length alone, and a client understands that 401 and
    its ``WWW-Authenticate`` challenge better than a 431.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_json_depth: int | None = MAX_JSON_DEPTH,
        max_header_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_depth = max_json_depth
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type: bytes | None = None
        header_bytes = 0
        for name, value in scope["headers"]:
            if name != b"authorization":  # capped by the token size: a 401 with a challenge
                header_bytes += len(name) + len(value)
            if name == b"content-length":
                # RFC 9110 §8.6: 1*DIGIT. int() would also take "-1", "+5", " 5"
                # and "1_0"; a malformed length is refused, not guessed at.
                too_large = not value.isdigit() or int(value) > self.max_bytes
                if too_large:
                    await _send_problem(send, 413, _TOO_LARGE)
                    return
            elif name == b"content-type":
                content_type = value
        if self.max_header_bytes is not None and header_bytes > self.max_header_bytes:
            await _send_problem(send, 431, _HEADERS_TOO_LARGE)
            return
        depth_limit = self.max_json_depth if _is_json(content_type) else None
        chunks: list[bytes] = []

        received = 0
        response_started = False
        refused = False

        async def refuse(status: int, body: bytes) -> None:
            nonlocal refused
            if not response_started and not refused:
                refused = True
                await _send_problem(send, status, body)
            raise _BodyRefused

        async def limited_receive() -> Message:
            # The refusal is sent here, not when the exception comes back out
            # of the app: frameworks catch errors raised while reading the body
            # (FastAPI turns them into its own 400), so it may never come back.
            message = await receive()
            if message["type"] == "http.request":
                nonlocal received
                body = message.get("body", b"")
                received += len(body)
                if received > self.max_bytes:
                    await refuse(413, _TOO_LARGE)
                if depth_limit is not None:
                    chunks.append(body)
                    if not message.get("more_body", False):
                        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                        chunks.clear()
                        if json_nesting_exceeds(data, depth_limit):
                            await refuse(400, _TOO_DEEP)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return  # the refusal went out; the app's answer to the aborted read is dropped
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        # Answered in limited_receive already (or too late to answer at all).
        with contextlib.suppress(_BodyRefused):
            await self.app(scope, limited_receive, tracking_send)


class _BodyRefused(Exception):
    pass


async def _send_problem(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


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
