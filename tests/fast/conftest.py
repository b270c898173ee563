"""The fast tier: GraphQL documents executed in this process (``schema.execute``) over the
services the composition root builds, against the simulator over real HTTP; no app, no
server of the service's own. ``pytest -m fast`` runs this tier alone."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import FastTier, InProcess, fast_tier, fresh_postgres, in_process

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session")
async def tier(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastTier]:
    async with fast_tier(tmp_path_factory.mktemp("fast")) as shared:
        yield shared


@pytest.fixture
async def api(tier: FastTier, tmp_path: Path) -> AsyncIterator[InProcess]:
    """Fresh services per test: cold cache, empty database, a fleet and counts of its own."""
    async with in_process(tier, tmp_path) as executed:
        yield executed


@pytest.fixture(params=["sqlite", "postgresql"])
async def recipe_api(request, tier: FastTier, tmp_path: Path) -> AsyncIterator[InProcess]:
    """The services on SQLite (their default) and on PostgreSQL, each starting empty."""
    overrides = {}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
        await fresh_postgres()
    async with in_process(tier, tmp_path, **overrides) as executed:
        yield executed
