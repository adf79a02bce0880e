"""Property tests of the parsers that read attacker-controlled text: the JWT
shape parser, the scope parser, the guard's ``Authorization`` handling and the
``X-Request-ID`` middleware. Derandomized and bounded, so a run is
reproducible and takes seconds."""

from __future__ import annotations

import base64
import json
import re
import string
from typing import Any

import anyio
import pytest
from fastapi import FastAPI, Security
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import InvalidScope, InvalidToken
from bastion.guard import BearerGuard, Principal
from bastion.jwt import ParsedToken, encode_access_token, parse_token, verify_signature
from bastion.middleware import RequestId, request_id_var
from bastion.scopes import MAX_SCOPE_LENGTH, format_scope, parse_scope
from bastion.server.errors import install_error_handlers
from bastion.testing import TokenFactory

BOUNDED = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

B64URL = string.ascii_letters + string.digits + "-_"
latin1_text = st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def token_like(draw: st.DrawFn) -> str:
    """Strings shaped enough like a JWS to get past the first checks: base64url
    segments of arbitrary bytes or of JSON (objects, header-like ones included)."""
    header_json = st.dictionaries(
        st.sampled_from(["alg", "typ", "kid", "crit", "jku", "x"]), json_values, max_size=4
    )
    segment = st.one_of(
        st.binary(max_size=60).map(b64),
        header_json.map(lambda h: b64(json.dumps(h).encode())),
        json_values.map(lambda v: b64(json.dumps(v).encode())),
        st.text(alphabet=B64URL + "=+/. ", max_size=40),
    )
    parts = draw(st.lists(segment, min_size=1, max_size=4))
    return ".".join(parts)


# ------------------------------------------------------------------ parse_token


@BOUNDED
@given(st.one_of(st.text(max_size=300), latin1_text, token_like()))
def test_parse_token_raises_only_invalid_token(text: str) -> None:
    """Any text either parses or raises InvalidToken with the generic text,
    whose logged cause never repeats the token."""
    result = _parse_outcome(text)
    if isinstance(result, InvalidToken):
        assert str(result) == InvalidToken.default_detail
        assert len(text) < 16 or text not in str(result.__cause__)
    else:
        assert isinstance(result.kid, str)
        assert result.kid
        assert isinstance(result.alg, str)


def _parse_outcome(text: str) -> ParsedToken | InvalidToken:
    try:
        return parse_token(text)
    except InvalidToken as exc:  # anything else propagates and fails the test
        return exc


FACTORY = TokenFactory(issuer="https://auth.example")
KEY = FACTORY.signing_key


@BOUNDED
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_valid_tokens_round_trip(claims: dict[str, Any]) -> None:
    """Whatever the claims, a token we sign parses back to its kid, alg and
    payload, and its signature verifies."""
    token = encode_access_token(claims, KEY)
    parsed = parse_token(token)
    assert (parsed.kid, parsed.alg) == (KEY.kid, KEY.algorithm)
    assert json.loads(parsed.payload) == claims
    verify_signature(parsed, KEY.verification_key())


# ------------------------------------------------------------------ parse_scope

SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
scope_tokens = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'),
    min_size=1,
    max_size=12,
)


@BOUNDED
@given(st.one_of(st.none(), st.text(max_size=300), latin1_text))
def test_parse_scope_yields_grammar_tokens_or_invalid_scope(value: str | None) -> None:
    """Every token returned fits RFC 6749 §3.3; anything else is InvalidScope."""
    try:
        scopes = parse_scope(value)
    except InvalidScope:
        assert value is not None
        return
    assert all(SCOPE_TOKEN.fullmatch(s) for s in scopes)
    assert parse_scope(format_scope(scopes)) == scopes


@BOUNDED
@given(st.frozensets(scope_tokens, max_size=10))
def test_scope_sets_round_trip(scopes: frozenset[str]) -> None:
    """format_scope and parse_scope are inverses on valid scope sets."""
    formatted = format_scope(scopes)
    assert len(formatted) <= MAX_SCOPE_LENGTH
    assert parse_scope(formatted) == scopes


# ------------------------------------------------------------------ the guard over ASGI


def _guarded_app() -> FastAPI:
    guard = BearerGuard(FACTORY.verifier())
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/p")
    async def protected(
        principal: Principal = Security(guard, scopes=["read"]),  # noqa: B008 (FastAPI marker)
    ) -> dict[str, str]:
        return {"sub": principal.subject}

    return app


GUARDED = _guarded_app()
VALID = FACTORY.mint(scopes=["read"])
NO_SCOPE = FACTORY.mint()


def call(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[bytes, bytes]]:
    """One GET /p straight through ASGI: any header bytes, no client-side checks."""
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/p",
            "raw_path": b"/p",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1234),
            "server": ("testserver", 80),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)

    anyio.run(run)
    start = sent[0]
    return start["status"], dict(start["headers"])


authorization_values = st.one_of(
    st.binary(max_size=200),
    st.tuples(
        st.sampled_from([b"Bearer ", b"bearer ", b"BEARER  ", b"Bearer", b"Basic ", b""]),
        st.one_of(
            st.binary(max_size=200),
            token_like().map(str.encode),
            st.sampled_from([VALID, NO_SCOPE]).map(str.encode),
        ),
        st.sampled_from([b"", b" ", b"x", b".", b"\x00", b" extra"]),
    ).map(b"".join),
)


@BOUNDED
@given(st.lists(authorization_values, max_size=2))
def test_any_authorization_header_is_401_403_or_accepted_never_500(values: list[bytes]) -> None:
    """Arbitrary Authorization values: 200 only for the valid token, 403 for
    the scope-less one, 401 with a Bearer challenge otherwise."""
    status, headers = call(GUARDED, [(b"authorization", v) for v in values])
    assert status in (200, 401, 403), status
    if status == 200:
        assert values[0] in (b"Bearer " + VALID.encode(), b"bearer " + VALID.encode())
    else:
        assert headers[b"www-authenticate"].startswith(b"Bearer")


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (b"Bearer " + VALID.encode(), 200),
        (b"Bearer " + NO_SCOPE.encode(), 403),
        (b"Bearer " + VALID.encode() + b"x", 401),
        (b"Basic " + VALID.encode(), 401),
    ],
)
def test_guard_examples_anchor_the_property(value: bytes, status: int) -> None:
    """The property above is not vacuous: each outcome is reachable."""
    assert call(GUARDED, [(b"authorization", value)])[0] == status


# ------------------------------------------------------------------ X-Request-ID

ID_SHAPE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


async def _echo_id(scope: Any, receive: Any, send: Any) -> None:
    seen = (request_id_var.get() or "").encode("latin-1")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-seen", seen)]})
    await send({"type": "http.response.body", "body": b""})


REQUEST_ID_APP = RequestId(_echo_id)
request_ids = st.one_of(
    st.binary(max_size=100),
    st.text(alphabet=string.ascii_letters + string.digits + "._:-", min_size=1, max_size=70).map(
        str.encode
    ),
)


@BOUNDED
@given(st.lists(request_ids, max_size=3))
def test_request_id_is_the_callers_when_sane_and_fresh_otherwise(values: list[bytes]) -> None:
    """The first X-Request-ID is kept if it is 1-64 safe characters; otherwise
    a fresh 32-hex id. The app and the response see the same id."""
    status, headers = call(REQUEST_ID_APP, [(b"x-request-id", v) for v in values])
    assert status == 200
    echoed = headers[b"x-request-id"]
    assert echoed == headers[b"x-seen"]
    first = values[0].decode("latin-1") if values else ""
    if ID_SHAPE.fullmatch(first):
        assert echoed == values[0]
    else:
        assert re.fullmatch(rb"[0-9a-f]{32}", echoed)
