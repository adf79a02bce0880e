"""fastapi-users (15.x) as its documentation sets it up: SQLAlchemy users in
SQLite, a bearer transport and the JWT strategy. Runs only in the peers'
environment (bench/peers/.venv), started by bench/peers/run.py as::

    python -m uvicorn --factory fastapi_users_app:create_app --app-dir bench/peers/apps

Our code over fastapi-users' public API; nothing of theirs is copied here.
Settings come from the environment:

``PEER_DATABASE_URL``  ``sqlite+aiosqlite:///...``
``PEER_SECRET``        the JWT (HS256, the strategy's default) secret
``PEER_ARGON2_M``/``_T``/``_P``  argon2id parameters; fastapi-users hashes with
                       pwdlib's argon2id, which defaults to m=65536 t=3 p=4:
                       set to Bastion's (OWASP baseline) so logins cost the same

Routes: ``POST /auth/register``, ``POST /auth/jwt/login`` (form),
``GET /protected`` (``current_user(active=True)``: the JWT is decoded and the
user read from the database on every request, which is how fastapi-users
works), ``GET /health``. fastapi-users has no refresh tokens by default.
"""

# No `from __future__ import annotations`: FastAPI resolves the signatures.
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi_users import BaseUserManager, FastAPIUsers, UUIDIDMixin, schemas
from fastapi_users.authentication import AuthenticationBackend, BearerTransport, JWTStrategy
from fastapi_users.db import SQLAlchemyBaseUserTableUUID, SQLAlchemyUserDatabase
from fastapi_users.password import PasswordHelper
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


class User(SQLAlchemyBaseUserTableUUID, Base):
    pass


class UserRead(schemas.BaseUser[uuid.UUID]):
    pass


class UserCreate(schemas.BaseUserCreate):
    pass


def create_app() -> FastAPI:
    """Factory for ``uvicorn --factory``: everything built from the environment."""
    secret = os.environ["PEER_SECRET"]
    engine = create_async_engine(os.environ["PEER_DATABASE_URL"])
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    password_helper = PasswordHelper(
        PasswordHash(
            (
                Argon2Hasher(
                    memory_cost=int(os.environ["PEER_ARGON2_M"]),
                    time_cost=int(os.environ["PEER_ARGON2_T"]),
                    parallelism=int(os.environ["PEER_ARGON2_P"]),
                ),
            )
        )
    )

    async def get_user_db() -> AsyncIterator[SQLAlchemyUserDatabase[User, uuid.UUID]]:
        async with sessions() as session:
            yield SQLAlchemyUserDatabase(session, User)

    class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
        reset_password_token_secret = secret
        verification_token_secret = secret

    async def get_user_manager(
        user_db: Annotated[SQLAlchemyUserDatabase[User, uuid.UUID], Depends(get_user_db)],
    ) -> AsyncIterator[UserManager]:
        yield UserManager(user_db, password_helper)

    def get_jwt_strategy() -> JWTStrategy[User, uuid.UUID]:
        return JWTStrategy(secret=secret, lifetime_seconds=900)

    backend = AuthenticationBackend(
        name="jwt",
        transport=BearerTransport(tokenUrl="auth/jwt/login"),
        get_strategy=get_jwt_strategy,
    )
    users = FastAPIUsers[User, uuid.UUID](get_user_manager, [backend])
    current_active_user = users.current_user(active=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    app.include_router(users.get_auth_router(backend), prefix="/auth/jwt")
    app.include_router(users.get_register_router(UserRead, UserCreate), prefix="/auth")

    @app.get("/protected")
    async def protected(user: Annotated[User, Depends(current_active_user)]) -> dict[str, str]:
        return {"subject": str(user.id)}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
