"""The database: engine, sessions, and schema migrations (Alembic)."""

import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

MIGRATIONS = Path(__file__).parent.parent / "models" / "migrations"
# Alembic keeps the running migration in module globals: two apps of one process (tests
# run replicas side by side) must not migrate at the same moment.
_MIGRATING = threading.Lock()


def create_engine(url: str) -> AsyncEngine:
    options: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        # One connection's writes wait for another's instead of failing at once.
        options["connect_args"] = {"timeout": 30}
    return create_async_engine(url, **options)


def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


async def migrate(engine: AsyncEngine) -> None:
    """Brings the database to the newest schema; does nothing when it is there."""

    def upgrade(connection: Connection) -> None:
        config = alembic_config(str(engine.url.render_as_string(hide_password=False)))
        config.attributes["connection"] = connection
        with _MIGRATING:
            command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)
