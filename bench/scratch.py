"""What the standalone benchmarks (``webhooks.py``, ``stack_floor.py``) share: a scratch database
on a PostgreSQL server, and ports on loopback."""

from __future__ import annotations

import socket
import time
import urllib.parse


def database_url(server_url: str, name: str) -> str:
    """``server_url`` (any database URL of the server) with database ``name``."""
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def scratch_database(server_url: str, name: str, *, create: bool) -> None:
    """Drop database ``name`` (its sessions too), then create it empty if ``create``."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if create:
            conn.execute(f"CREATE DATABASE {name}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, seconds: float = 10) -> None:
    """Until something accepts connections on 127.0.0.1:``port``; OSError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
