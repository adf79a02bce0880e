"""AuthX (1.x) as its documentation sets it up: JWTs in the Authorization
header, access and refresh tokens. AuthX issues and checks tokens but keeps no
users, so the user table and the password check are ours (SQLite through
``sqlite3``, argon2id through pwdlib, as fastapi-users and Bastion use), in
plain ``def`` routes as AuthX's examples write them (FastAPI runs those in
its thread pool). Runs only in the peers' environment (bench/peers/.venv).

Our code over AuthX's public API; nothing of theirs is copied here. Settings
come from the environment: ``PEER_DATABASE_PATH`` (a SQLite file),
``PEER_SECRET`` (the HS256 secret, AuthX's default algorithm; it has no EdDSA)
and ``PEER_ARGON2_M``/``_T``/``_P``.

Routes: ``POST /register`` (JSON), ``POST /login`` (form), ``GET /protected``
(``access_token_required``: the token alone decides), ``POST /refresh``
(``refresh_token_required`` with the refresh token as the bearer: a new access
token; the refresh token is neither rotated nor stored, so there is no reuse
detection), ``GET /health``.
"""

# No `from __future__ import annotations`: FastAPI resolves the signatures.
import os
import sqlite3
import uuid
from typing import Annotated

from authx import AuthX, AuthXConfig, TokenPayload
from fastapi import Depends, FastAPI, Form, HTTPException
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import BaseModel


class Credentials(BaseModel):
    email: str
    password: str


def create_app() -> FastAPI:
    """Factory for ``uvicorn --factory``: everything built from the environment."""
    path = os.environ["PEER_DATABASE_PATH"]
    auth = AuthX(
        config=AuthXConfig(
            JWT_SECRET_KEY=os.environ["PEER_SECRET"],
            JWT_TOKEN_LOCATION=["headers"],
        )
    )
    hasher = PasswordHash(
        (
            Argon2Hasher(
                memory_cost=int(os.environ["PEER_ARGON2_M"]),
                time_cost=int(os.environ["PEER_ARGON2_T"]),
                parallelism=int(os.environ["PEER_ARGON2_P"]),
            ),
        )
    )
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS users (email TEXT PRIMARY KEY, id TEXT, hash TEXT)")

    app = FastAPI()
    auth.handle_errors(app)

    @app.post("/register", status_code=201)
    def register(body: Credentials) -> dict[str, str]:
        user_id = str(uuid.uuid4())
        with sqlite3.connect(path) as db:
            try:
                db.execute(
                    "INSERT INTO users VALUES (?, ?, ?)",
                    (body.email.lower(), user_id, hasher.hash(body.password)),
                )
            except sqlite3.IntegrityError:
                raise HTTPException(409, "taken") from None
        return {"id": user_id}

    @app.post("/login")
    def login(username: Annotated[str, Form()], password: Annotated[str, Form()]) -> dict[str, str]:
        with sqlite3.connect(path) as db:
            row = db.execute(
                "SELECT id, hash FROM users WHERE email = ?", (username.lower(),)
            ).fetchone()
        if row is None or not hasher.verify(password, row[1]):
            raise HTTPException(400, "bad credentials")
        return {
            "access_token": auth.create_access_token(uid=row[0]),
            "refresh_token": auth.create_refresh_token(uid=row[0]),
            "token_type": "bearer",
        }

    @app.get("/protected")
    async def protected(
        payload: Annotated[TokenPayload, Depends(auth.access_token_required)],
    ) -> dict[str, str]:
        return {"subject": str(payload.sub)}

    @app.post("/refresh")
    async def refresh(
        payload: Annotated[TokenPayload, Depends(auth.refresh_token_required)],
    ) -> dict[str, str]:
        return {
            "access_token": auth.create_access_token(uid=str(payload.sub)),
            "token_type": "bearer",
        }

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
