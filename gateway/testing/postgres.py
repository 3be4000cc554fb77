"""A throwaway PostgreSQL server for tests: ``initdb`` into a temporary directory, ``postgres`` on
127.0.0.1 on a free port, stopped and removed afterwards.

Debian keeps the server programs out of ``PATH`` (``/usr/lib/postgresql/VERSION/bin``), so the
package is found by ``pg_ctlcluster`` (the Makefile's ``TOOLS``) and the programs in the newest
version's directory. PostgreSQL refuses to run as root; under root the cluster belongs to
``nobody`` and its programs run as that user.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from gateway.testing.programs import require_program

#: The server's settings for tests: durability off (a test cluster is thrown away), small memory.
_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "shared_buffers=16MB",
             "max_connections=60", "listen_addresses=127.0.0.1")


def postgres_bin_dir() -> Path:
    """The newest installed server version's program directory; a skip (or CI failure) when none."""
    require_program("pg_ctlcluster", "postgresql")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if not found:
        require_program("initdb", "postgresql")
        return Path(shutil.which("initdb")).parent
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One running cluster; :attr:`dsn` connects as its superuser ``hssk`` (trust auth, 127.0.0.1)."""

    def __init__(self) -> None:
        self.bin = postgres_bin_dir()
        self.directory = Path(tempfile.mkdtemp(prefix="hssk-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self.dsn = f"host=127.0.0.1 port={self.port} user=hssk dbname=postgres"
        self._process: subprocess.Popen | None = None
        self._user = "nobody" if os.geteuid() == 0 else None
        if self._user:
            os.chmod(self.directory, 0o755)
            shutil.chown(self.directory, "nobody")

    def start(self, timeout: float = 30.0) -> "PostgresServer":
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "hssk", "--auth=trust",
                        "--no-sync", "-E", "UTF8", "--locale=C"], check=True, capture_output=True,
                       user=self._user)
        args = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.directory)]
        for setting in _SETTINGS:
            args += ["-c", setting]
        self._log = open(self.directory / "postgres.log", "wb")
        self._process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, user=self._user)
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start: {(self.directory / 'postgres.log').read_text()}")
                time.sleep(0.05)
        while True:  # the port opens before the server accepts logins
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def create_database(self, name: str) -> str:
        """A new empty database; returns its DSN."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"host=127.0.0.1 port={self.port} user=hssk dbname={name}"

    def stop(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGINT)  # fast shutdown: clients are cut off
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._log.close()
        shutil.rmtree(self.directory, ignore_errors=True)
