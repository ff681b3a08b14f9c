"""A private PostgreSQL cluster for the tests, on a free loopback port.

The Debian cluster (if any) is never used: a throw-away cluster with trust auth and fsync off
starts in about a second and can be filled with one database per test.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from broker.mosquitto.local import free_port

HOST = "127.0.0.1"
SUPERUSER = "postgres"
# The OS account that owns the cluster when we run as root (initdb refuses to run as root).
OS_USER = "postgres"
START_TIMEOUT_S = 30
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _version_key(bin_dir: str) -> tuple[int, ...]:
    version = Path(bin_dir).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def find_pg_bin_dir() -> Path:
    """Newest Debian server bin dir, else the dir of pg_ctl on PATH; Debian keeps these off PATH."""
    candidates = [p for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "pg_ctl").is_file()]
    if candidates:
        return Path(max(candidates, key=_version_key))
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise RuntimeError("PostgreSQL server binaries (pg_ctl, initdb) not found: run scripts/setup")


def _is_root() -> bool:
    return os.geteuid() == 0


def _os_owner() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        # Debian's server package creates this account.
        raise RuntimeError(f"no {OS_USER!r} OS user to own the cluster: run scripts/setup") from None


def _clean_env() -> dict[str, str]:
    # A developer's PGHOST/PGDATABASE/PGSSLMODE... must not redirect the tools to another server.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not readable)"


class LocalPostgres:
    """A PostgreSQL cluster owned by this object, listening on 127.0.0.1:port only."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self._port = port if port is not None else free_port()
        self._bin = find_pg_bin_dir()
        self._runtime: Path | None = None
        self._private_runtime = False
        self._started = False
        self._crashed = False  # stopped by crash(), waiting for resume()

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self._port

    @property
    def dsn(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL (asyncpg driver) of a database in this cluster."""
        return f"postgresql+asyncpg://{SUPERUSER}@{HOST}:{self._port}/{database}"

    @property
    def log_path(self) -> Path:
        return self._runtime_dir / "postgres.log"

    @property
    def _runtime_dir(self) -> Path:
        if self._runtime is None:
            raise RuntimeError("LocalPostgres has not been started")
        return self._runtime

    @property
    def _data_dir(self) -> Path:
        return self._runtime_dir / "data"

    def start(self) -> None:
        """initdb (first time only) and pg_ctl start; returns once the server accepts connections."""
        if self._started:
            return
        self._runtime = self._prepare_runtime_dir()
        if not (self._data_dir / "PG_VERSION").is_file():
            self._initdb()
        self._pg_ctl_start()
        self._started = True

    def _prepare_runtime_dir(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not _is_root():
            return self.workdir
        owner = _os_owner()
        os.chown(self.workdir, owner.pw_uid, owner.pw_gid)
        if self._os_user_can_write(self.workdir):
            return self.workdir
        # pytest's base temp dir is mode 0700 and owned by root, so the postgres user cannot reach
        # a workdir below it: use a private dir of its own, removed again by stop().
        runtime = Path(tempfile.mkdtemp(prefix="hallfleet-pg-"))
        os.chown(runtime, owner.pw_uid, owner.pw_gid)
        self._private_runtime = True
        return runtime

    def _os_user_can_write(self, path: Path) -> bool:
        probe = ["runuser", "-u", OS_USER, "--", "test", "-w", str(path), "-a", "-x", str(path)]
        return subprocess.run(probe, cwd="/", check=False).returncode == 0

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", OS_USER, "--", *argv] if _is_root() else argv

    def _run_server_tool(self, argv: list[str], what: str) -> None:
        # cwd inside the runtime dir: pg_ctl fails when it cannot read its current directory.
        result = subprocess.run(
            self._as_owner(argv),
            cwd=self._runtime_dir,
            env=_clean_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{what} failed (exit code {result.returncode}):\n{result.stdout}{result.stderr}\n"
                f"--- {self.log_path} ---\n{_tail(self.log_path)}"
            )

    def _initdb(self) -> None:
        argv = [str(self._bin / "initdb"), "-D", str(self._data_dir), "--auth=trust", "-U", SUPERUSER]
        # --no-sync: a test cluster need not survive a power cut, and initdb's fsyncs cost seconds.
        argv += ["-E", "UTF8", "--locale=C", "--no-sync"]
        self._run_server_tool(argv, "initdb")

    def _pg_ctl_start(self) -> None:
        options = f"-p {self._port} -k {self._runtime_dir} -c listen_addresses={HOST} -c fsync=off"
        argv = [str(self._bin / "pg_ctl"), "-D", str(self._data_dir), "-l", str(self.log_path)]
        argv += ["-o", options, "-w", "-t", str(START_TIMEOUT_S), "start"]
        self._run_server_tool(argv, f"pg_ctl start on {HOST}:{self._port}")

    def stop(self) -> None:
        """Fast shutdown (disconnects clients); a private runtime dir is removed afterwards."""
        if not self._started:
            return
        if not self._crashed:
            argv = [str(self._bin / "pg_ctl"), "-D", str(self._data_dir), "-m", "fast", "-w", "stop"]
            self._run_server_tool(argv, "pg_ctl stop")
        self._started = False
        if self._private_runtime:
            self._remove_private_runtime()

    def crash(self) -> None:
        """Immediate shutdown (clients cut, no checkpoint), data kept: a database outage; resume() ends it."""
        argv = [str(self._bin / "pg_ctl"), "-D", str(self._data_dir), "-m", "immediate", "-w", "stop"]
        self._run_server_tool(argv, "pg_ctl stop -m immediate")
        self._crashed = True

    def resume(self) -> None:
        """Start the same cluster again after crash() (crash recovery replays its WAL)."""
        self._pg_ctl_start()
        self._crashed = False

    def _remove_private_runtime(self) -> None:
        # Keep the server log beside the caller's other artefacts for post-mortems.
        if self.log_path.is_file():
            shutil.copyfile(self.log_path, self.workdir / "postgres.log")
        shutil.rmtree(self._runtime_dir, ignore_errors=True)
        self._runtime = None
        self._private_runtime = False

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"database name {name!r} must match {_DB_NAME.pattern}")
        if not self._started:
            raise RuntimeError("LocalPostgres has not been started")
        self._psql(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def _psql(self, sql: str) -> None:
        argv = [str(self._bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", HOST, "-p", str(self._port), "-U", SUPERUSER, "-d", "postgres", "-c", sql]
        result = subprocess.run(argv, env=_clean_env(), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {result.stderr.strip()}")

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
