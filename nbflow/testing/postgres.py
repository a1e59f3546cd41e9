"""A throwaway PostgreSQL server from Debian's package, for tests and benchmarks.

:func:`start_server` runs ``initdb`` into a temporary folder and starts ``postgres`` on a
free loopback port (its socket also in that folder); :meth:`PostgresServer.stop` stops it
and removes the folder. Nothing outside the folder is touched, and no password is set
(``trust`` authentication on 127.0.0.1 only)::

    with start_server() as server:
        store = nf.open_store(server.uri(schema="t1"))

The binaries are looked up in ``$NBFLOW_PG_BIN``, then ``/usr/lib/postgresql/<newest
version>/bin``, then next to ``pg_ctl`` on the ``PATH``. When run as root the server runs
as the ``postgres`` user (``initdb`` refuses root), through ``runuser``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresServer", "PostgresUnavailableError", "find_bin_dir", "start_server"]

ENV_BIN = "NBFLOW_PG_BIN"
INSTALL_HINT = (
    "install Debian's PostgreSQL server with `apt-get install -y postgresql` "
    f"(or point ${ENV_BIN} at a folder holding initdb and pg_ctl)"
)


class PostgresUnavailableError(RuntimeError):
    """The PostgreSQL server binaries are missing, or the server would not start."""


def find_bin_dir() -> Path:
    """The folder holding ``initdb``/``pg_ctl``/``postgres``; PostgresUnavailableError
    (saying what to install) when there is none."""
    candidates: list[Path] = []
    if os.environ.get(ENV_BIN):
        candidates.append(Path(os.environ[ENV_BIN]))
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = [p for p in root.iterdir() if re.fullmatch(r"\d+(\.\d+)?", p.name)]
        versions.sort(key=lambda p: tuple(int(x) for x in p.name.split(".")), reverse=True)
        candidates += [p / "bin" for p in versions]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresUnavailableError(
        f"no PostgreSQL server binaries found (looked in {', '.join(map(str, candidates))}"
        f"{' and ' if candidates else ''}/usr/lib/postgresql/*/bin): {INSTALL_HINT}."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A running throwaway server: connection URIs, and :meth:`stop`."""

    def __init__(self, bin_dir: Path, folder: Path, port: int, as_user: str | None):
        self.bin_dir = bin_dir
        self.folder = folder
        self.data = folder / "data"
        self.port = port
        self.host = "127.0.0.1"
        self.user = "postgres"
        self._as_user = as_user
        self._stopped = False

    def uri(self, database: str = "postgres", schema: str | None = None) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/DATABASE`` (``?schema=`` if given)."""
        text = f"postgresql://{self.user}@{self.host}:{self.port}/{database}"
        return text + (f"?schema={schema}" if schema else "")

    def new_schema_uri(self, prefix: str = "t") -> str:
        """The URI of a schema no one has used yet (the store creates it on open)."""
        return self.uri(schema=f"{prefix}_{uuid.uuid4().hex[:16]}")

    def drop_schema(self, name: str) -> None:
        """Drop a schema and everything in it (tests clean up after themselves)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.uri(), autocommit=True) as con:
            con.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))

    def create_database(self, name: str) -> str:
        """Create an empty database; return its URI."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.uri(), autocommit=True) as con:
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.uri(database=name)

    def _run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(a) for a in args]
        if self._as_user:
            argv = ["runuser", "-u", self._as_user, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)

    @property
    def running(self) -> bool:
        """Whether :meth:`stop` has not been called yet."""
        return not self._stopped

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            self._run(self.bin_dir / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_server(
    *, durable: bool = False, base: str | os.PathLike[str] | None = None, attempts: int = 3
) -> PostgresServer:
    """Initialise and start a throwaway server on a free loopback port.

    ``durable=False`` (tests) turns off ``fsync`` and synchronous commit; benchmarks pass
    ``durable=True`` to measure what a real server does. The server is stopped at
    interpreter exit if :meth:`PostgresServer.stop` was not called.
    """
    bin_dir = find_bin_dir()
    as_user = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="nbflow-pg-", dir=base))
    try:
        if as_user:
            folder.chmod(0o755)
            shutil.chown(folder, user=as_user)
        server = PostgresServer(bin_dir, folder, free_port(), as_user)
        init = server._run(
            bin_dir / "initdb",
            "-D",
            server.data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
            check=False,
        )
        if init.returncode != 0:
            raise PostgresUnavailableError(f"initdb failed: {init.stderr.strip()}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(folder),
            "max_connections": "100",
            "timezone": "UTC",
        }
        if not durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        with (server.data / "postgresql.auto.conf").open("a") as fh:
            for key, value in settings.items():
                fh.write(f"{key} = '{value}'\n")
        for attempt in range(attempts):
            started = server._run(
                bin_dir / "pg_ctl",
                "-D",
                server.data,
                "-l",
                folder / "server.log",
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {server.port}",
                "start",
                check=False,
            )
            if started.returncode == 0:
                break
            if attempt == attempts - 1:  # most likely someone took the port meanwhile
                log = (folder / "server.log").read_text(errors="replace")[-2000:]
                raise PostgresUnavailableError(
                    f"the PostgreSQL server would not start: {started.stderr.strip()}\n{log}"
                )
            server.port = free_port()
            time.sleep(0.2)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    atexit.register(server.stop)
    return server


def _server_user() -> str | None:
    """``postgres`` when running as root (initdb refuses root), else None (run as is)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailableError(
            "running as root, the server must run as another user, and there is no "
            f"'postgres' user: {INSTALL_HINT}."
        ) from None
    if shutil.which("runuser") is None:
        raise PostgresUnavailableError("running as root needs `runuser` (util-linux).")
    return "postgres"
