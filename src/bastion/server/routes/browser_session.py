"""Browser sessions over JSON, for single-page apps: ``/auth/session``.

- ``POST`` logs in with an email and a password (JSON or a form) and sets the
  session cookie; the answer carries the CSRF token. The request must come
  from a trusted origin: with no session yet there is no token to check, and
  a forged login (an attacker's account slipped into the victim's browser)
  is a CSRF attack too.
- ``GET`` tells a page whether it is signed in, and its CSRF token again.
- ``DELETE`` logs out (CSRF checked) and clears the cookie.

The server-rendered pages (``/login``, ``/logout``, ``/account``) use the
same service and cookie helpers.
"""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Request, Response, Security, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from bastion.credentials.session_cookie import (
    FORM_TYPES,
    SessionCaller,
    clear_session_cookie,
    set_session_cookie,
)
from bastion.errors import InvalidCredentials
from bastion.server.context import client_context
from bastion.server.errors import NO_STORE
from bastion.server.schemas import (
    BrowserSessionOut,
    Problem,
    SessionLoginRequest,
    SessionStarted,
)

if TYPE_CHECKING:
    from bastion.core import Bastion

_LOGIN_BODY = {
    "required": True,
    "content": {
        media: {"schema": SessionLoginRequest.model_json_schema()}
        for media in ("application/json", "application/x-www-form-urlencoded")
    },
}
"""Documented by hand: the route reads the body itself (JSON or form)."""


async def _login_body(
    request: Request, *, max_fields: int, max_part_size: int
) -> SessionLoginRequest:
    """The credentials, from a JSON body or a form (one route, both types:
    FastAPI binds a body to one of them, so this reads it itself). 415 for
    any other type, 422 for a malformed or incomplete body."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    data: Any
    if content_type == "application/json":
        try:
            data = json.loads(await request.body())
        except ValueError:
            raise RequestValidationError(
                [{"loc": ("body",), "msg": "The body is not valid JSON.", "type": "json_invalid"}]
            ) from None
    elif content_type in FORM_TYPES:
        form = await request.form(max_files=0, max_fields=max_fields, max_part_size=max_part_size)
        data = {key: value for key, value in form.items() if isinstance(value, str)}
    else:
        raise HTTPException(415, "Send the credentials as JSON or as a form.")
    try:
        return SessionLoginRequest.model_validate(data)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None


def build(bastion: "Bastion") -> APIRouter:
    router = APIRouter(prefix="/auth", tags=["browser sessions"])
    service = bastion.browser_sessions
    settings = bastion.settings
    guard = bastion.session_principal
    Caller = Annotated[SessionCaller, Security(guard.caller_dependency())]

    @router.post(
        "/session",
        response_model=SessionStarted,
        openapi_extra={"requestBody": _LOGIN_BODY},
        responses={
            401: {"model": Problem, "description": "Wrong email or password (one text for all)"},
            403: {"model": Problem, "description": "Not from a trusted origin"},
            415: {"model": Problem, "description": "Neither JSON nor a form"},
            422: {"model": Problem, "description": "Malformed body"},
            429: {"model": Problem, "description": "Too many attempts (Retry-After)"},
        },
    )
    async def log_in(request: Request) -> Response:
        """Log in with an email and a password; the session cookie comes in
        ``Set-Cookie`` and the answer carries its CSRF token. A session
        cookie sent along ends: every login gets a fresh id."""
        service.check_origin(request.headers.get("origin"), request.headers.get("referer"))
        body = await _login_body(
            request,
            max_fields=settings.max_form_fields,
            max_part_size=settings.max_form_part_bytes,
        )
        context = client_context(request, bastion.trusted_proxies)
        try:
            started = await service.log_in(
                username=body.email,
                password=body.password,
                ip=context.ip_address,
                user_agent=context.user_agent,
                previous_cookie=guard.presented(request),
            )
        except InvalidCredentials as exc:
            raise HTTPException(
                401, exc.detail, headers={"WWW-Authenticate": guard.challenge}
            ) from None
        answer = SessionStarted(
            csrf_token=started.csrf_token,
            expires_at=started.session.expires_at,
            idle_timeout=service.idle_timeout,
        )
        response = JSONResponse(answer.model_dump(mode="json"), headers=NO_STORE)
        set_session_cookie(response, started.cookie_value, settings)
        return response

    @router.get(
        "/session",
        response_model=BrowserSessionOut,
        responses={401: {"model": Problem, "description": "No live session"}},
    )
    async def current_session(caller: Caller, response: Response) -> BrowserSessionOut:
        """The caller's session and its CSRF token (a page that lost it, say
        after a reload, asks here). Changes nothing."""
        response.headers.update(NO_STORE)
        session = caller.session
        return BrowserSessionOut(
            session_id=session.public_id,
            user_id=session.user_id,
            created_at=session.created_at,
            last_seen_at=session.last_seen_at,
            expires_at=session.expires_at,
            idle_expires_at=session.idle_expires_at,
            idle_timeout=service.idle_timeout,
            csrf_token=service.csrf_token(session),
        )

    @router.delete(
        "/session",
        status_code=status.HTTP_204_NO_CONTENT,
        responses={
            401: {"model": Problem, "description": "No live session"},
            403: {"model": Problem, "description": "CSRF token or origin refused"},
        },
    )
    async def log_out(caller: Caller, request: Request) -> Response:
        """Log out: the session ends on the server (the cookie is worthless
        from now on, even if a copy survives) and the cookie is cleared."""
        cookie = guard.presented(request)
        if cookie is not None:
            await service.end(cookie)
        response = Response(status_code=status.HTTP_204_NO_CONTENT, headers=NO_STORE)
        clear_session_cookie(response, settings)
        return response

    return router
