"""What the tests share beyond fixtures."""

import os
import socket
from collections import Counter
from math import ceil
from pathlib import Path

import pytest


def require_service(name: str, host: str, port: int) -> None:
    """Skips when a local service is absent, unless REQUIRE_SERVICES=1 makes that a failure."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc})"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


QUERIES = Path(__file__).parent / "queries"


def document(name: str) -> str:
    """A query exactly as the frontend sends it, from tests/queries/<name>.graphql."""
    return (QUERIES / f"{name}.graphql").read_text()


def lossless_floor(instants: list[int]) -> int:
    """The calls a lossless read of these events needs at most (DESIGN.md)."""
    n = len(instants)
    if n <= 500:
        return 1
    m = max(Counter(instants).values())
    return 1 + ceil((n - 500) / (500 - m))
