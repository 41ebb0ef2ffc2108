"""PostgreSQL for tests: a fresh database on the shared server (scripts/test-servers), a
SQLAlchemy engine on it, and a throwaway cluster of a test's own that it may stop and restart."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from tests.helpers.net import free_port

__all__ = ["PGBIN", "ThrowawayPostgres", "fresh_database", "psycopg_url"]

PGBIN = Path("/usr/lib/postgresql/15/bin")


def psycopg_url(url: str) -> str:
    """``url`` with the psycopg (v3) driver named, as the product's engines use it."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


@contextmanager
def fresh_database(postgres_url: str, prefix: str = "gk") -> Iterator[str]:
    """A new, empty database on the server of ``postgres_url``, dropped (even if still in use)
    afterwards; yields its URL, password included."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield sa.engine.make_url(postgres_url).set(database=name).render_as_string(
                hide_password=False
            )
        finally:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


class ThrowawayPostgres:
    """A PostgreSQL 15 cluster of its own (initdb + pg_ctl, like scripts/test-servers) on a free
    port, for tests that stop and restart the database."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self.owner = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str) -> None:
        command = [*args]
        if self.owner:
            command = ["runuser", "-u", self.owner, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if self.owner:
            shutil.chown(self.base, self.owner)
        self._run(str(PGBIN / "initdb"), "-D", str(self.data), "-U", "gatekeeper", "--auth=trust",
                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")

    def start(self) -> None:
        self._run(str(PGBIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"), "-w",
                  "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PGBIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://gatekeeper@127.0.0.1:{self.port}/postgres"
