"""What the tests share beyond fixtures."""

import os
import socket

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
