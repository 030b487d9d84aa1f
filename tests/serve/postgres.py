"""A real PostgreSQL server for the tests, started in a temporary directory on a free loopback
port and stopped after the session (Debian's postgresql package, installed by scripts/setup.sh).
Where no server binary is found the tests that need one skip, saying why."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path


def binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server():
    """Yields a base URL (postgresql://divqat@127.0.0.1:PORT) of a fresh cluster in a temporary
    directory of its own (pytest's are private to root, which the server's user cannot enter)."""
    bin_dir = binaries()
    if bin_dir is None:
        import pytest

        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql; scripts/setup.sh does it as root)")
    workdir = Path(tempfile.mkdtemp(prefix="divqat-test-postgres-"))
    data = workdir / "pgdata"
    data.mkdir(parents=True)
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: the package's own user runs the server
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "divqat", "--no-sync"],
                   **run)  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off -c max_connections=200"
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l",
                    str(data / "log"), "start"], **run)  # fmt: skip
    try:
        yield f"postgresql://divqat@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(workdir, ignore_errors=True)  # the directory made above, nothing else


def new_database(base_url: str) -> str:
    """A fresh, empty database on the server: each test its own."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return f"{base_url}/{name}"
