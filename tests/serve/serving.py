"""Helpers for the serving tests: real servers on free loopback ports, started and stopped here."""

import socket
from contextlib import contextmanager

import httpx

from divqat.serve.keys import KeySpec
from divqat.wire import parse_output_mode


def spec(key: str, budget: int, output: str = "probabilities") -> KeySpec:
    return KeySpec(key, budget, parse_output_mode(output))


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # port 0: the kernel picks a free one, held until the server closes it
    sock.listen(128)
    return sock


@contextmanager
def running(app, max_connections: int = 64):
    """uvicorn serving `app` in a thread on a free loopback port, configured as `divqat serve`
    configures it (the guarded protocol, limits, logging); yields the base URL."""
    from divqat.serve.worker import serve_in_thread

    with serve_in_thread(app, loopback_socket(), max_connections=max_connections) as served:
        yield served.url


def client(url: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)
