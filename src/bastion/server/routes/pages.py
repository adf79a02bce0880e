"""The browser pages: ``/login``, ``/logout`` and ``/account``.

Server-rendered HTML forms, no script (see :mod:`bastion.server.html` for
templates, messages and error pages). The pages hold no logic of their own:
logins, sessions and CSRF proofs are :class:`~bastion.browser_sessions.BrowserSessionService`'s,
keys :class:`~bastion.api_keys.ApiKeyService`'s, passwords
:class:`~bastion.accounts.AccountService`'s.

The rules every page keeps:

- **State never changes on GET** (RFC 9110 §9.2.1): signing out has a
  confirmation form; every action is a POST.
- **Every POST proves where it came from** before anything else is read: a
  trusted ``Origin`` (or ``Referer``), then, for a signed-in action, the
  session cookie and the session's CSRF token in the ``csrf_token`` field
  (:mod:`bastion.csrf`). The login form has no session yet, so it checks the
  origin alone (login CSRF: another site must not sign a victim into the
  attacker's account). A refusal is a 403 page and nothing changes.
- **Post/Redirect/Get**: a successful action answers 303 to ``/account``
  with a ``done`` code naming a fixed message. The one exception is a new API
  key: it exists in the clear only in that answer, so it is rendered there
  (201, never cached) and never put in a URL.
- A failed action re-renders the page with the status of the error (401 bad
  login, 403, 404 for an unknown id or another user's alike, 409, 422, 429
  with ``Retry-After``) and its message; a password is never echoed back.
"""

# No `from __future__ import annotations`: FastAPI must resolve the route
# signatures at runtime, and they refer to the local `bastion`.
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData

from bastion.credentials.session_cookie import (
    SessionCaller,
    clear_session_cookie,
    set_session_cookie,
)
from bastion.errors import (
    AuthorizationError,
    BastionError,
    Conflict,
    CsrfRejected,
    InvalidCredentials,
    InvalidInput,
    NotFound,
    RateLimited,
)
from bastion.server.context import client_context
from bastion.server.errors import rate_limit_headers
from bastion.server.html import NO_STORE, LoginRequired, Pages, page_route_class, safe_next

if TYPE_CHECKING:
    from bastion.core import Bastion

STATIC: Final = {
    name: (files("bastion.server").joinpath(f"static/{name}").read_bytes(), media_type)
    for name, media_type in (("bastion.css", "text/css"), ("favicon.svg", "image/svg+xml"))
}
"""The pages' stylesheet (CSP ``style-src 'self'``) and icon, read once."""
EXPIRY_CHOICES: Final = (7, 30, 90, 365)
"""Days a new API key may live, as offered by the form (within the server's maximum)."""
MAX_EMAIL: Final = 320
MAX_PASSWORD: Final = 4096
BAD_LOGIN: Final = "Invalid email or password."
REFUSED: Final = "Nothing was changed. Go back, reload the page and try again."


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _see_other(request: Request, path: str) -> RedirectResponse:
    root = request.scope.get("root_path", "")
    return RedirectResponse(root + path, status_code=303, headers=NO_STORE)


def build(bastion: "Bastion") -> APIRouter:
    settings = bastion.settings
    service = bastion.browser_sessions
    guard = bastion.session_principal.optional()
    pages = Pages(lambda response: clear_session_cookie(response, settings))
    router = APIRouter(route_class=page_route_class(pages), include_in_schema=False)

    async def read_form(request: Request) -> FormData:
        return await request.form(
            max_files=0,
            max_fields=settings.max_form_fields,
            max_part_size=settings.max_form_part_bytes,
        )

    async def viewer(request: Request) -> SessionCaller:
        """The signed-in caller of a GET page, or off to the login page."""
        here = request.url.path.removeprefix(request.scope.get("root_path", ""))
        try:
            caller = await guard.caller(request)
        except HTTPException as exc:
            if exc.status_code == 401:
                raise LoginRequired(here, expired=True) from None
            raise
        if caller is None:
            raise LoginRequired(here, expired=False)
        return caller

    def check_origin(request: Request) -> None:
        """:class:`CsrfRejected` unless the request comes from a trusted origin."""
        try:
            service.check_origin(request.headers.get("origin"), request.headers.get("referer"))
        except CsrfRejected as exc:
            raise CsrfRejected(f"{exc.detail} {REFUSED}") from None

    async def actor(request: Request) -> SessionCaller:
        """The caller of a POST action, after every CSRF proof: the origin
        first (so a cross-site request is refused whether or not the browser
        sent the cookie), then the session, then its token."""
        check_origin(request)
        try:
            caller = await guard.caller(request)
        except HTTPException as exc:
            if exc.status_code == 401:
                raise LoginRequired("/account", expired=True) from None
            if exc.status_code == 403:
                raise CsrfRejected(f"{exc.detail} {REFUSED}") from None
            raise
        if caller is None:
            raise LoginRequired("/account", expired=False)
        return caller

    async def account_page(
        request: Request,
        caller: SessionCaller,
        *,
        status: int = 200,
        error: str | None = None,
        headers: dict[str, str] | None = None,
        key_name: str = "",
    ) -> HTMLResponse:
        user = caller.user
        effective = await bastion.authz.effective(user.id)
        max_days = bastion.api_keys.max_ttl.days
        context: dict[str, Any] = {
            "signed_in": True,
            "user": user,
            "roles": sorted(effective.roles),
            "permissions": sorted(effective.permissions),
            "browser_sessions": await service.list(user.id, current=caller.session.public_id),
            "token_sessions": await bastion.refresh.sessions(user.id),
            "api_keys": await bastion.api_keys.list(user.id),
            "now": bastion.clock.now(),
            "csrf_token": service.csrf_token(caller.session),
            "expiry_choices": [d for d in EXPIRY_CHOICES if d <= max_days],
            "expiry_required": bastion.api_keys.require_expiry,
            "password_min_length": settings.password_min_length,
            "key_name": key_name,
        }
        if error is not None:
            context["error"] = error
        return pages.render(
            request,
            "account.html",
            title="Your account",
            status=status,
            headers=headers,
            **context,
        )

    async def refused(
        request: Request, caller: SessionCaller, exc: BastionError, **kwargs: Any
    ) -> HTMLResponse:
        """The account page again, with the error's status and message."""
        headers = rate_limit_headers(exc) if isinstance(exc, RateLimited) else None
        return await account_page(
            request, caller, status=exc.status_code, error=exc.detail, headers=headers, **kwargs
        )

    # ------------------------------------------------------------------ static

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        """One of :data:`STATIC`; anything else is 404."""
        if name not in STATIC:
            raise NotFound("No such file.")
        body, media_type = STATIC[name]
        return Response(
            body, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"}
        )

    # ------------------------------------------------------------------ login, logout

    @router.get("/login")
    async def login_form(request: Request) -> HTMLResponse:
        """The sign-in form; ``next`` (a path on this site) is where it leads."""
        return pages.render(
            request,
            "login.html",
            title="Sign in",
            email="",
            next=safe_next(request.query_params.get("next")),
        )

    @router.post("/login")
    async def login(request: Request) -> Response:
        """Check the origin (login CSRF), then the password through the one
        login path (limits, lockout, audit); a new session replaces any the
        browser had (no fixation)."""
        check_origin(request)
        form = await read_form(request)
        email = (_field(form, "email") or "").strip()
        password = _field(form, "password") or ""
        next_path = safe_next(_field(form, "next"))

        def again(status: int, error: str, headers: dict[str, str] | None = None) -> Response:
            return pages.render(
                request,
                "login.html",
                title="Sign in",
                status=status,
                headers=headers,
                error=error,
                email=email[:MAX_EMAIL],
                next=next_path,
            )

        if not email or not password:
            return again(422, "Enter your email and your password.")
        if len(email) > MAX_EMAIL or len(password) > MAX_PASSWORD:
            return again(422, "The email or password is too long.")
        context = client_context(request, bastion.trusted_proxies)
        try:
            started = await service.log_in(
                username=email,
                password=password,
                ip=context.ip_address,
                user_agent=context.user_agent,
                previous_cookie=guard.presented(request),
            )
        except InvalidCredentials:
            return again(401, BAD_LOGIN, {"WWW-Authenticate": guard.challenge})
        except RateLimited as exc:
            return again(429, exc.detail, rate_limit_headers(exc))
        response = _see_other(request, next_path)
        set_session_cookie(response, started.cookie_value, settings)
        return response

    @router.get("/logout")
    async def logout_form(request: Request) -> HTMLResponse:
        """A confirmation: signing out changes state, so it takes a POST."""
        caller = await viewer(request)
        return pages.render(
            request,
            "logout.html",
            title="Sign out",
            signed_in=True,
            user=caller.user,
            csrf_token=service.csrf_token(caller.session),
        )

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        """End this browser's session on the server and drop the cookie."""
        await actor(request)
        cookie = guard.presented(request)
        if cookie is not None:
            await service.end(cookie)
        response = _see_other(request, "/login?done=signed_out")
        clear_session_cookie(response, settings)
        return response

    # ------------------------------------------------------------------ account

    @router.get("/account")
    async def account(request: Request) -> HTMLResponse:
        """Profile, sessions, API keys and the password form."""
        return await account_page(request, await viewer(request))

    @router.post("/account/sessions/{public_id}/end")
    async def end_browser_session(public_id: str, request: Request) -> Response:
        """End one of the user's browser sessions; ending this one signs out."""
        caller = await actor(request)
        try:
            await service.end_session(public_id, caller.user.id)
        except NotFound as exc:
            return await refused(request, caller, exc)
        if public_id == caller.session.public_id:
            response = _see_other(request, "/login?done=signed_out")
            clear_session_cookie(response, settings)
            return response
        return _see_other(request, "/account?done=session_ended")

    @router.post("/account/token-sessions/{session_id}/end")
    async def end_token_session(session_id: str, request: Request) -> Response:
        """End one of the user's token sessions (a refresh-token family)."""
        caller = await actor(request)
        user = caller.user
        try:
            try:
                family = UUID(session_id)
            except ValueError:
                raise NotFound("No such session.") from None
            await bastion.refresh.revoke_session(family, user_id=user.id)
        except NotFound as exc:
            return await refused(request, caller, exc)
        await bastion.audit.record("session.ended", actor=str(user.id), target=str(family))
        return _see_other(request, "/account?done=session_ended")

    @router.post("/account/api-keys")
    async def create_api_key(request: Request) -> Response:
        """Create a key and show it, once, on the answer itself."""
        caller = await actor(request)
        form = await read_form(request)
        name = _field(form, "name") or ""
        permissions = [p for p in form.getlist("permissions") if isinstance(p, str)]
        expiry = _field(form, "expires_in_days") or ""
        try:
            if expiry and (not (expiry.isascii() and expiry.isdigit()) or len(expiry) > 5):
                raise InvalidInput("Choose an expiry from the list.")
            issued = await bastion.api_keys.create(
                caller.user.id,
                name,
                permissions,
                expires_in_days=int(expiry) if expiry else None,
            )
        except (InvalidInput, AuthorizationError, Conflict, NotFound) as exc:
            return await refused(request, caller, exc, key_name=name[:100])
        return pages.render(
            request,
            "api_key_created.html",
            title="API key created",
            status=201,
            signed_in=True,
            key=issued.key,
            record=issued.record,
        )

    @router.post("/account/api-keys/{key_id}/revoke")
    async def revoke_api_key(key_id: str, request: Request) -> Response:
        """Revoke one of the user's keys; another user's is unknown here (404)."""
        caller = await actor(request)
        try:
            await bastion.api_keys.revoke(key_id, owner=caller.user.id)
        except NotFound as exc:
            return await refused(request, caller, exc)
        return _see_other(request, "/account?done=key_revoked")

    @router.post("/account/password")
    async def change_password(request: Request) -> Response:
        """Change the password, proving the current one; every session ends
        (browser and token sessions, this one included), as for
        ``POST /me/password``: whoever knew the old password is out."""
        caller = await actor(request)
        user = caller.user
        form = await read_form(request)
        current = _field(form, "current_password") or ""
        new = _field(form, "new_password") or ""
        ip = client_context(request, bastion.trusted_proxies).ip_address
        try:
            if not current or not new:
                raise InvalidInput("Enter your current password and a new one.")
            if len(current) > MAX_PASSWORD or len(new) > MAX_PASSWORD:
                raise InvalidInput("The password is too long.")
            await bastion.password_change.change(user, current=current, new=new, ip=ip)
        except InvalidCredentials as exc:
            # 403, as POST /me/password: the session is fine, the proof is not.
            return await refused(request, caller, AuthorizationError(exc.detail))
        except (InvalidInput, RateLimited) as exc:
            return await refused(request, caller, exc)
        response = _see_other(request, "/login?done=password_changed")
        clear_session_cookie(response, settings)
        return response

    return router
