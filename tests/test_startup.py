"""Starting the service: `provgraph serve` run for real, as a process of its own. A service
that cannot start says why in one line with what to do, without a traceback, and before
it announces anything; the warning about the built-in cursor secret."""

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from server.app import DEFAULT_CURSOR_SECRET, create_app
from server.settings import Settings

WAIT_S = 60  # an upper bound for the process, never a synchronisation
ROOT = Path(__file__).parent.parent
PROVGRAPH = Path(sys.executable).parent / "provgraph"


def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This checkout's code (ahead of any installed copy), a database of the test's own,
    and ``settings``; no setting of the surrounding environment leaks in."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name in ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")
    }
    return {
        **inherited,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/provgraph.db",
        "LOG_FORMAT": "text",
        **settings,
    }


def serve(tmp_path: Path, *arguments: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``provgraph serve`` run to its end; only a failure to start ends it."""
    return subprocess.run(
        [str(PROVGRAPH), "serve", *arguments],
        env=environment(tmp_path, **settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )


def assert_refused_in_one_line(result: subprocess.CompletedProcess[str], *hints: str) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("provgraph serve: ")
    assert "Traceback" not in line
    for hint in hints:
        assert hint in line
    assert "pgr_" not in result.stdout + result.stderr  # no development token was announced
    return line


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nothing listens on (held, so that nothing starts to while the test runs)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def test_serve_on_a_busy_port_says_so_before_announcing_a_token(tmp_path, busy_port):
    result = serve(tmp_path, "--dev", "--port", str(busy_port))
    line = assert_refused_in_one_line(result, f"port {busy_port} is in use", "PORT=")
    assert "stop the other process" in line
    assert "startup complete" not in result.stderr.lower()


def test_serve_with_a_misspelled_database_url_names_the_driver_to_use(tmp_path, free_port):
    result = serve(
        tmp_path,
        "--port",
        str(free_port),
        DATABASE_URL="postgres://postgres:hunter2@127.0.0.1:5432/provgraph",
    )
    assert_refused_in_one_line(
        result, "postgres:// is not a database driver", "postgresql+asyncpg://"
    )
    assert "hunter2" not in result.stderr


def test_serve_with_an_unreachable_database_says_which_and_hides_its_password(
    tmp_path, free_port, closed_port
):
    url = f"postgresql+asyncpg://provgraph:hunter2@127.0.0.1:{closed_port}/provgraph"
    result = serve(tmp_path, "--port", str(free_port), DATABASE_URL=url)
    line = assert_refused_in_one_line(
        result, "cannot connect to the database at postgresql+asyncpg://provgraph:***@"
    )
    assert "that the database is running" in line
    assert "hunter2" not in result.stderr


@pytest.fixture
async def unmigrated_postgres(postgres_url: str) -> AsyncIterator[str]:
    """An empty database beside the test database, on the same PostgreSQL server."""
    url = make_url(postgres_url)
    name = f"{url.database}_unmigrated"
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield url.set(database=name).render_as_string(hide_password=False)
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def test_serve_on_an_unmigrated_database_says_run_migrate(
    tmp_path, free_port, unmigrated_postgres
):
    result = await asyncio.to_thread(
        serve, tmp_path, "--port", str(free_port), DATABASE_URL=unmigrated_postgres
    )
    assert_refused_in_one_line(result, "has none of this service's tables", "provgraph migrate")


def test_serve_with_a_bad_setting_names_it(tmp_path):
    result = serve(tmp_path, PORT="eight thousand")
    assert_refused_in_one_line(result, "bad setting PORT")


@pytest.fixture
def free_port() -> int:
    """A port free a moment ago; a test that fails before binding never uses it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def read_until(stream: asyncio.StreamReader, pattern: bytes) -> re.Match[bytes]:
    """The first match of ``pattern`` in the lines of ``stream``."""
    while line := await stream.readline():
        if found := re.search(pattern, line):
            return found
    raise AssertionError(f"the process ended without writing {pattern!r}")


@dataclass
class Serving:
    """``provgraph serve --dev`` started: its process, URL and development token."""

    process: asyncio.subprocess.Process
    base: str
    token: str


@asynccontextmanager
async def serving_dev(tmp_path: Path) -> AsyncIterator[Serving]:
    """``provgraph serve --dev`` on a free port, once it listens and has announced its
    token; stopped at the end if the test has not stopped it."""
    process = await asyncio.create_subprocess_exec(
        str(PROVGRAPH),
        "serve",
        "--dev",
        "--port",
        "0",
        env=environment(tmp_path),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        async with asyncio.timeout(WAIT_S):
            listening = await read_until(process.stderr, rb"listening on (\S+)")
            announced = await read_until(process.stdout, rb"Authorization: Bearer (pgr_\S+)")
        yield Serving(process, listening.group(1).decode(), announced.group(1).decode())
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def test_serve_announces_the_token_once_listening_and_prefills_graphiql(tmp_path):
    async with serving_dev(tmp_path) as served, httpx.AsyncClient(timeout=WAIT_S) as http:
        page = await http.get(f"{served.base}/graphql", headers={"accept": "text/html"})
        query = await http.post(
            f"{served.base}/graphql",
            json={"query": "{ provisioningRecipes(first: 1) { totalCount } }"},
            headers={"Authorization": f"Bearer {served.token}"},
        )
    assert served.token in page.text
    assert query.json()["data"] == {"provisioningRecipes": {"totalCount": 0}}


def test_the_built_in_cursor_secret_is_warned_about_outside_dev(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    database = f"sqlite+aiosqlite:///{tmp_path}/provgraph.db"
    default = DEFAULT_CURSOR_SECRET.get_secret_value()
    create_app(Settings(_env_file=None, database_url=database, cursor_secret=default))
    assert "CURSOR_SECRET is the built-in default" in caplog.text

    caplog.clear()
    create_app(
        Settings(_env_file=None, database_url=database, cursor_secret=default, auth_dev_token=True)
    )
    create_app(Settings(_env_file=None, database_url=database, cursor_secret="our own"))
    assert "CURSOR_SECRET" not in caplog.text
