"""Serving an ASGI app from a background thread or process, for tests and benchmarks.

The listening socket is bound before the server starts, so clients may connect at once:
the kernel queues them until uvicorn accepts, and nobody has to poll for readiness.
"""

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import uvicorn
from starlette.types import ASGIApp


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Connections accepted here inherit TCP_NODELAY. A server given a ready socket does
    # not always set it (uvloop does not), and without it a response written in two
    # parts waits 40 ms for the client's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


@contextmanager
def serving(app: ASGIApp, sock: socket.socket | None = None) -> Iterator[str]:
    """Serves ``app`` on loopback (an ephemeral port unless ``sock`` is given); yields its URL."""
    sock = sock or listening_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


class Served(NamedTuple):
    url: str
    pid: int


@contextmanager
def serving_process(factory: str, environment: dict[str, str]) -> Iterator[Served]:
    """Serves ``module:factory`` in a uvicorn process of its own, with ``environment`` (and
    PORT) added to this process's; yields its URL and process id."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--fd",
            str(sock.fileno()),
            "--log-level",
            "warning",
        ],
        pass_fds=[sock.fileno()],
        env={**os.environ, "PORT": str(port), **environment},
    )
    sock.close()
    try:
        yield Served(f"http://127.0.0.1:{port}", process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)


def _serve_inherited(factory: str, fd: int) -> None:
    # Not ``uvicorn --fd``, which takes every inherited socket for a Unix one.
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(factory, factory=True, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    _serve_inherited(sys.argv[1], int(sys.argv[2]))
