"""``provgraph tokens``: create, list and revoke API tokens in DATABASE_URL's database.

A created token's secret goes to standard output alone (``TOKEN=$(provgraph tokens
create ...)``) and is never shown again; everything else goes to standard error.
"""

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from models.principal import SCOPES
from resolvers.database import create_engine, migrate, sessions
from resolvers.tokens import READ_SCOPES, InvalidTokenRequest, TokenStore, state
from server.startup import check_database, read_settings


@asynccontextmanager
async def _store() -> AsyncIterator[TokenStore]:
    url = read_settings().database_url
    await check_database(url, schema=True)
    engine = create_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            await migrate(engine)  # as the service does at start
        yield TokenStore(sessions(engine))
    finally:
        await engine.dispose()


def _run(command: Callable[[TokenStore], Awaitable[None]]) -> None:
    async def run() -> None:
        async with _store() as store:
            await command(store)

    asyncio.run(run())


def _create(args: argparse.Namespace) -> None:
    async def create(store: TokenStore) -> None:
        try:
            issued = await store.create(
                args.name,
                args.org,
                args.scope or READ_SCOPES,
                account_id=args.account_id,
                expires_in=None if args.expires_in is None else timedelta(days=args.expires_in),
            )
        except InvalidTokenRequest as exc:
            raise SystemExit(f"provgraph tokens create: {exc}") from exc
        token = issued.token
        expiry = f"expires {_when(token.expires_at)}" if token.expires_at else "no expiry"
        print(
            f"token {token.id} {token.name!r}: organizations {', '.join(token.organizations)}; "
            f"scopes {' '.join(token.scopes)}; {expiry}. Its secret, shown this once:",
            file=sys.stderr,
        )
        print(issued.secret, flush=True)

    _run(create)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%MZ") if moment else "-"


def _list(args: argparse.Namespace) -> None:
    async def list_tokens(store: TokenStore) -> None:
        rows = [
            (
                "ID",
                "NAME",
                "STATE",
                "ORGANIZATIONS",
                "SCOPES",
                "ACCOUNT",
                "CREATED",
                "EXPIRES",
                "LAST USED",
            )
        ]
        for token in await store.all():
            rows.append(
                (
                    str(token.id),
                    token.name,
                    state(token),
                    ",".join(token.organizations),
                    " ".join(token.scopes),
                    str(token.account_id) if token.account_id is not None else "-",
                    _when(token.created_at),
                    _when(token.expires_at),
                    _when(token.last_used_at),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )

    _run(list_tokens)


def _revoke(args: argparse.Namespace) -> None:
    async def revoke(store: TokenStore) -> None:
        token = await store.revoke(args.id)
        if token is None:
            raise SystemExit(f"provgraph tokens revoke: there is no token {args.id}")
        print(f"token {token.id} {token.name!r} is revoked")

    _run(revoke)


def add_commands(tokens: argparse.ArgumentParser) -> None:
    """The actions of ``provgraph tokens``, on its parser."""
    actions = tokens.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a token; prints its secret once")
    create.add_argument("--name", required=True, help="what the token is for")
    create.add_argument(
        "--org",
        action="append",
        required=True,
        help="an organization uid the token may act for (repeatable), or '*' for all",
    )
    create.add_argument(
        "--scope",
        action="append",
        choices=list(SCOPES),
        help=f"a scope (repeatable); default: {' '.join(READ_SCOPES)}",
    )
    create.add_argument("--account-id", type=int, help="the originator account id of events")
    create.add_argument("--expires-in", type=float, metavar="DAYS", help="default: never")
    create.set_defaults(run=_create)
    listing = actions.add_parser("list", help="list tokens (never their secrets)")
    listing.set_defaults(run=_list)
    revoke = actions.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(run=_revoke)
