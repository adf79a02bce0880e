"""The ``bastion`` command. Each command calls the same services as the HTTP
routes; none holds logic of its own."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from bastion.core import Bastion
from bastion.errors import BastionError, ConfigurationError, NotFound
from bastion.settings import Settings
from bastion.stores.protocols import SigningKeyRecord, User

T = TypeVar("T")

app = typer.Typer(help="Bastion: authentication and authorization server.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
users_app = typer.Typer(help="User accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="Token signing keys.", no_args_is_help=True)
roles_app = typer.Typer(help="Roles and their permissions.", no_args_is_help=True)
clients_app = typer.Typer(help="OAuth clients (client id, secret, grants).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(roles_app, name="roles")
app.add_typer(clients_app, name="clients")

CLI_ACTOR = "cli"
"""The actor audit events name for changes made on the command line."""


def _settings() -> Settings:
    try:
        settings = Settings()
        settings.check_production()
    except ConfigurationError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:  # pydantic's ValidationError: a malformed setting
        typer.echo(f"error: invalid settings:\n{exc}", err=True)
        raise typer.Exit(2) from None
    return settings


def _run(work: Callable[[Bastion], Awaitable[T]]) -> T:
    """Run one service call against a Bastion built from the environment."""

    async def main() -> T:
        bastion = Bastion(_settings())
        try:
            return await work(bastion)
        finally:
            await bastion.shutdown()

    try:
        return asyncio.run(main())
    except BastionError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Overrides BASTION_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides BASTION_PORT.")] = None,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
) -> None:
    """Run the auth server (uvicorn, one worker)."""
    import uvicorn

    if host is not None:
        os.environ["BASTION_HOST"] = host
    if port is not None:
        os.environ["BASTION_PORT"] = str(port)
    settings = _settings()
    uvicorn.run(
        "bastion.server.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        reload=reload,
        log_level=settings.log_level.lower(),
        proxy_headers=False,
        server_header=False,
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from bastion.stores.sql.migrate import upgrade

    settings = _settings()
    asyncio.run(upgrade(settings.database_url, revision))
    typer.echo(f"database at revision {revision}")


@db_app.command("purge")
def db_purge() -> None:
    """Delete expired refresh sessions, denylist entries, watermarks and
    signing keys that left the JWKS (the server also does this hourly)."""
    removed = _run(lambda b: b.purge())
    typer.echo(", ".join(f"{name}: {count}" for name, count in removed.items()))


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="The account's email address.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    username: Annotated[str | None, typer.Option()] = None,
    role: Annotated[
        list[str] | None,
        typer.Option(help="A role to give (repeatable); BASTION_DEFAULT_ROLES when omitted."),
    ] = None,
) -> None:
    """Create a user. The password is read from stdin, never from the command
    line, where it would land in shell history and the process list."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)

    async def work(b: Bastion) -> User:
        user = await b.accounts.register(
            email=email,
            password=password,
            username=username,
            roles=frozenset(role if role else b.settings.default_roles),
        )
        await b.audit.record("user.created", actor=CLI_ACTOR, target=str(user.id))
        return user

    user = _run(work)
    typer.echo(f"created user {user.id} <{user.email}>")


async def _user_by_email(b: Bastion, email: str) -> User:
    user = await b.accounts.get_by_email(email)
    if user is None:
        raise NotFound(f"No user with the email {email!r}.")
    return user


def _change_roles(email: str, role: str, *, grant: bool) -> None:
    async def work(b: Bastion) -> frozenset[str]:
        user = await _user_by_email(b, email)
        change = b.authz.assign if grant else b.authz.unassign
        before = await b.authz.user_roles(user.id)
        roles = await change(user.id, role, actor=CLI_ACTOR)
        if roles != before:
            await b.revocations.expire_access_tokens([user.id])
        return roles

    roles = _run(work)
    typer.echo(f"{email}: {' '.join(sorted(roles)) or '(no roles)'}")


@users_app.command("grant")
def users_grant(email: str, role: str) -> None:
    """Give a user a role."""
    _change_roles(email, role, grant=True)


@users_app.command("revoke")
def users_revoke(email: str, role: str) -> None:
    """Take a role from a user; their current access tokens stop working."""
    _change_roles(email, role, grant=False)


@roles_app.command("list")
def roles_list() -> None:
    """Every role with its parents and permissions."""
    roles = _run(lambda b: b.authz.roles_by_name())
    typer.echo("role\tparents\tpermissions")
    for name in sorted(roles):
        r = roles[name]
        parents = ",".join(sorted(r.parents)) or "-"
        typer.echo(f"{name}\t{parents}\t{' '.join(sorted(r.permissions)) or '-'}")


@roles_app.command("create")
def roles_create(
    name: str,
    parent: Annotated[list[str] | None, typer.Option(help="A role this one includes.")] = None,
    permission: Annotated[list[str] | None, typer.Option(help="A permission it grants.")] = None,
    description: str = "",
) -> None:
    """Create a role."""
    role = _run(
        lambda b: b.authz.create_role(
            name,
            description=description,
            parents=parent or [],
            permissions=permission or [],
            actor=CLI_ACTOR,
        )
    )
    typer.echo(f"created role {role.name}")


@roles_app.command("delete")
def roles_delete(name: str) -> None:
    """Delete a role; its holders' access tokens stop working."""

    async def work(b: Bastion) -> None:
        affected = await b.authz.affected_users(name)
        await b.authz.delete_role(name, actor=CLI_ACTOR)
        await b.revocations.expire_access_tokens(affected)

    _run(work)
    typer.echo(f"deleted role {name}")


def _set_active(email: str, active: bool) -> None:
    async def work(b: Bastion) -> str:
        user = await _user_by_email(b, email)
        await b.accounts.set_active(user.id, active)
        if not active:
            await b.revocations.revoke_everything(user.id, reason="user_disabled", actor=CLI_ACTOR)
        return str(user.id)

    user_id = _run(work)
    typer.echo(f"{'enabled' if active else 'disabled'} user {user_id}")


@users_app.command("disable")
def users_disable(email: str) -> None:
    """Disable a user: logins fail, every session ends, every access token dies."""
    _set_active(email, False)


@users_app.command("enable")
def users_enable(email: str) -> None:
    """Enable a disabled user again."""
    _set_active(email, True)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new active signing key; the old public key stays in the JWKS until
    every token it signed has expired."""

    async def work(b: Bastion) -> SigningKeyRecord:
        record = await b.keys.rotate()
        await b.audit.record("key.rotated", actor=CLI_ACTOR, target=record.kid)
        return record

    record = _run(work)
    typer.echo(f"new active key {record.kid} ({record.algorithm})")


@keys_app.command("list")
def keys_list() -> None:
    """Show every signing key and whether it signs, is still published, or is retired."""

    async def work(b: Bastion) -> list[str]:
        rows = []
        for r in await b.keys.list_keys():
            state = (
                "active" if r.is_active else ("published" if b.keys.is_published(r) else "expired")
            )
            retired = r.retired_at.isoformat() if r.retired_at else "-"
            rows.append(f"{r.kid}\t{r.algorithm}\t{state}\t{r.created_at.isoformat()}\t{retired}")
        return rows

    rows = _run(work)
    typer.echo("kid\talgorithm\tstate\tcreated\tretired")
    for row in rows:
        typer.echo(row)


@clients_app.command("create")
def clients_create(
    name: str,
    grant: Annotated[
        list[str] | None,
        typer.Option(
            help="A grant type it may use (repeatable): client_credentials, password, "
            "refresh_token, authorization_code."
        ),
    ] = None,
    scope: Annotated[
        list[str] | None, typer.Option(help="A permission it may get for itself (repeatable).")
    ] = None,
    redirect_uri: Annotated[
        list[str] | None, typer.Option(help="A redirection endpoint (repeatable).")
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="No secret (a native or browser app).")
    ] = False,
    client_id: Annotated[
        str | None, typer.Option(help="The id to use instead of a generated bcl_… one.")
    ] = None,
) -> None:
    """Register a client. A confidential client's secret is printed once:
    only its hash is kept."""
    issued = _run(
        lambda b: b.clients.create(
            name=name,
            grant_types=grant or [],
            scopes=scope or [],
            redirect_uris=redirect_uri or [],
            public=public,
            client_id=client_id,
            actor=CLI_ACTOR,
        )
    )
    kind = "confidential" if issued.secret is not None else "public"
    typer.echo(f"created {kind} client {issued.client.client_id}")
    typer.echo(f"client_id: {issued.client.client_id}")
    if issued.secret is not None:
        typer.echo(f"client_secret: {issued.secret}")
        typer.echo("Store the secret now: it is not shown again.")


@clients_app.command("list")
def clients_list() -> None:
    """Every client with its grants and scopes; never a secret."""
    clients = _run(lambda b: b.clients.list_clients())
    typer.echo("client_id\tname\ttype\tgrants\tscopes\tredirect_uris\tsecret_rotated")
    for c in clients:
        kind = "confidential" if c.is_confidential else "public"
        rotated = c.secret_rotated_at.isoformat() if c.secret_rotated_at else "-"
        typer.echo(
            "\t".join(
                (
                    c.client_id,
                    c.name,
                    kind,
                    ",".join(sorted(c.grant_types)),
                    " ".join(sorted(c.scopes)) or "-",
                    " ".join(c.redirect_uris) or "-",
                    rotated,
                )
            )
        )


@clients_app.command("rotate-secret")
def clients_rotate_secret(client_id: str) -> None:
    """Give a confidential client a new secret, printed once; the old one
    stops working at once."""
    secret = _run(lambda b: b.clients.rotate_secret(client_id, actor=CLI_ACTOR))
    typer.echo(f"client_id: {client_id}")
    typer.echo(f"client_secret: {secret}")
    typer.echo("Store the secret now: it is not shown again.")


@clients_app.command("delete")
def clients_delete(client_id: str) -> None:
    """Delete a client; the built-in ``bastion`` client cannot be."""
    _run(lambda b: b.clients.delete(client_id, actor=CLI_ACTOR))
    typer.echo(f"deleted client {client_id}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
