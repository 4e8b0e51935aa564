"""A throwaway PostgreSQL cluster from the distribution's binaries (Debian `postgresql`).

`initdb` a fresh cluster in a temp dir, run `postgres` on a free loopback port with its unix
socket inside that dir, create database `vidpipe`, and throw everything away on stop. The
server refuses to run as root, so as root it runs as the `postgres` system user.

`LocalPgBouncer` puts Debian's `pgbouncer` in transaction mode in front of any PostgreSQL URL,
as Supabase's pooler on port 6543 stands in front of a project's database.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import psycopg

from vidpipe.cli.processes import stop_process_group
from vidpipe.dev.processes import ServerProcess, death_signal_preexec, free_ports, log_tail
from vidpipe.errors import PostgresStartError

__all__ = [
    "LocalPgBouncer",
    "LocalPostgres",
    "PostgresBinaries",
    "PostgresStartError",
    "find_postgres_binaries",
]

log = logging.getLogger(__name__)

_SERVICE_USER = "postgres"
_DB_NAME = "vidpipe"
_HINT = "install PostgreSQL server binaries: run scripts/ensure-system-deps.sh"


@dataclass(frozen=True)
class PostgresBinaries:
    bindir: Path

    @property
    def initdb(self) -> str:
        return str(self.bindir / "initdb")

    @property
    def pg_ctl(self) -> str:
        return str(self.bindir / "pg_ctl")

    @property
    def postgres(self) -> str:
        return str(self.bindir / "postgres")


def _complete(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin; non-numeric versions sort last.
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (-1,)


def find_postgres_binaries() -> PostgresBinaries:
    """initdb/pg_ctl/postgres from one directory: PATH first, then the newest Debian install.

    Symlinks on PATH (e.g. /usr/local/bin/initdb) are resolved so that all three tools come
    from the same version's bin dir.
    """
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates.extend(debian)
    for bindir in candidates:
        if _complete(bindir):
            return PostgresBinaries(bindir)
    raise PostgresStartError(
        f"no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or under "
        f"/usr/lib/postgresql/*/bin; {_HINT}"
    )


def _service_account() -> pwd.struct_passwd | None:
    """The account to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        pass
    # The Debian package creates this user; binaries from elsewhere may not have.
    useradd = shutil.which("useradd")
    if useradd is None:
        raise PostgresStartError(
            f"running as root, PostgreSQL needs a non-root user and `{_SERVICE_USER}` does not "
            f"exist (no useradd to create it); {_HINT}"
        )
    subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/bin/sh",
            _SERVICE_USER,
        ],
        check=True,
        capture_output=True,
    )
    log.info("created system user %s to run PostgreSQL", _SERVICE_USER)
    return pwd.getpwnam(_SERVICE_USER)


def _traversable_by_others(path: Path) -> bool:
    """Can a different, unprivileged user reach files below `path`?"""
    for part in [path, *path.parents]:
        try:
            if not os.stat(part).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


class LocalPostgres(ServerProcess):
    """A throwaway PostgreSQL cluster; `url` is postgresql://postgres@127.0.0.1:PORT/vidpipe.

    Usage: `with LocalPostgres() as pg: use(pg.url)` or `start()` / `stop()`. Trust auth on
    loopback only, fsync off: a test database, never a real one.
    """

    def __init__(
        self,
        *,
        base_dir: Path | None = None,
        keep: bool = False,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 20.0,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.keep = keep
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.settings = dict(settings or {})
        self.root: Path | None = None
        self.binaries: PostgresBinaries | None = None
        self._account: pwd.struct_passwd | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self.startup_seconds: float | None = None

    # -- public -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LocalPostgres is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{_DB_NAME}"

    @property
    def data_dir(self) -> Path:
        if self.root is None:
            raise RuntimeError("LocalPostgres is not started")
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        if self.root is None:
            raise RuntimeError("LocalPostgres is not started")
        return self.root / "postgres.log"

    def start(self) -> Self:
        """initdb, start the server, wait until it accepts connections, create `vidpipe`."""
        if self._proc is not None:
            return self
        self.binaries = find_postgres_binaries()
        self._account = _service_account()
        began = time.monotonic()
        base = self.base_dir or Path(tempfile.gettempdir())
        if self._account is not None and not _traversable_by_others(base):
            base = Path("/tmp")  # noqa: S108 - the server user must be able to reach its dir
        self.root = Path(tempfile.mkdtemp(prefix="vidpipe-pg-", dir=base))
        atexit.register(self.stop)
        try:
            if self._account is not None:
                os.chown(self.root, self._account.pw_uid, self._account.pw_gid)
            (self.root / "sock").mkdir()
            if self._account is not None:
                os.chown(self.root / "sock", self._account.pw_uid, self._account.pw_gid)
            self._initdb()
            for attempt in range(3):
                self._port = free_ports(1)[0]
                self._launch()
                try:
                    self._wait_ready()
                    break
                except PostgresStartError:
                    tail = log_tail(self.log_file)
                    self._kill()
                    if "Address already in use" in tail and attempt < 2:
                        log.warning("PostgreSQL port was taken between pick and bind; retrying")
                        continue
                    raise
            self._create_database()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        log.info(
            "local PostgreSQL ready at 127.0.0.1:%s in %.1f s (cluster in %s)",
            self._port,
            self.startup_seconds,
            self.root,
        )
        return self

    def stop(self) -> None:
        """`pg_ctl stop -m fast`, then make sure the process is gone; remove the cluster."""
        atexit.unregister(self.stop)
        if self._proc is not None and self._proc.poll() is None and self.binaries is not None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._run(
                    [
                        self.binaries.pg_ctl,
                        "stop",
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "fast",
                        "-w",
                        "-t",
                        str(int(self.stop_timeout_s)),
                    ],
                    timeout=self.stop_timeout_s + 5,
                )
        self._kill()
        if self.root is not None and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        self._port = None

    # -- internals ----------------------------------------------------------------------

    def _as_server_user(self) -> dict[str, Any]:
        """Popen arguments that drop to the server account (nothing when not root)."""
        if self._account is None:
            return {}
        return {
            "user": self._account.pw_uid,
            "group": self._account.pw_gid,
            "extra_groups": [],
        }

    def _run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        assert self.root is not None
        # cwd inside our dir: the server user may not be allowed into the caller's cwd.
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            env=self._env(),
            check=False,
            **self._as_server_user(),
        )

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self._account is not None:
            env["HOME"] = self._account.pw_dir
            env["USER"] = env["LOGNAME"] = self._account.pw_name
        return env

    def _initdb(self) -> None:
        assert self.binaries is not None
        cmd = [
            self.binaries.initdb,
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        try:
            proc = self._run(cmd, timeout=120)
        except subprocess.TimeoutExpired as exc:
            raise PostgresStartError("initdb did not finish within 120 s") from exc
        if proc.returncode != 0:
            raise PostgresStartError(
                f"initdb failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
            )

    def _launch(self) -> None:
        assert self.binaries is not None and self.root is not None
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.root / "sock"),
            # Durability is pointless for a throwaway cluster; these make it much faster.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            **self.settings,
        }
        cmd = [self.binaries.postgres, "-D", str(self.data_dir), "-p", str(self._port)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        with open(self.log_file, "ab") as out:
            # The server is our direct child (not daemonised by pg_ctl start) so that we hold
            # its handle, and Linux can stop it (SIGINT = fast shutdown) if we die.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=self._env(),
                start_new_session=True,
                preexec_fn=death_signal_preexec(signal.SIGINT),
                **self._as_server_user(),
            )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise PostgresStartError(
                    f"postgres exited with code {code}\n--- tail of {self.log_file} ---\n"
                    f"{log_tail(self.log_file)}"
                )
            try:
                with psycopg.connect(self._admin_conninfo(), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last_error = exc
            time.sleep(0.1)
        raise PostgresStartError(
            f"PostgreSQL did not accept connections within {self.start_timeout_s:.0f} s "
            f"({last_error})\n--- tail of {self.log_file} ---\n{log_tail(self.log_file)}"
        )

    def _admin_conninfo(self) -> str:
        return f"host=127.0.0.1 port={self._port} user=postgres dbname=postgres"

    def _create_database(self) -> None:
        with psycopg.connect(self._admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{_DB_NAME}"')

    def _kill(self) -> None:
        if self._proc is not None:
            # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM ("smart") waits for clients.
            stop_process_group(self._proc, self.stop_timeout_s, signal.SIGINT)
            self._proc = None


class LocalPgBouncer(ServerProcess):
    """PgBouncer (Debian's `pgbouncer`) in transaction mode in front of a PostgreSQL URL.

    It behaves as Supabase's transaction-mode pooler does for a client: each transaction may
    run on a different server connection, and nothing of a session survives it. The reset query
    (`DISCARD ALL`) runs after every transaction, so a server-side prepared statement is gone by
    the next one, however few server connections there are: a client that relies on one fails
    at once instead of by chance. `url` is the same database through the pooler, with
    `?pgbouncer=true` so vidpipe's engine knows (`vidpipe.db.tables.pooler_in_url`); `bare_url`
    is without the flag, for libpq clients, which refuse unknown parameters.
    """

    def __init__(
        self,
        server_url: str,
        *,
        pool_size: int = 4,
        start_timeout_s: float = 15.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        from sqlalchemy.engine import make_url

        self._server = make_url(server_url)
        self.pool_size = pool_size
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.root: Path | None = None
        self._account: pwd.struct_passwd | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LocalPgBouncer is not started")
        return self._port

    def bare_url_for(self, database: str | None = None) -> str:
        """A libpq URL of `database` (default: the server URL's) through the pooler."""
        url = self._server.set(drivername="postgresql", host="127.0.0.1", port=self.port, query={})
        if database is not None:
            url = url.set(database=database)
        return url.render_as_string(hide_password=False)

    def url_for(self, database: str | None = None) -> str:
        """vidpipe's URL of `database` through the pooler (`?pgbouncer=true`)."""
        return f"{self.bare_url_for(database)}?pgbouncer=true"

    @property
    def url(self) -> str:
        return self.url_for()

    @property
    def bare_url(self) -> str:
        return self.bare_url_for()

    @property
    def log_file(self) -> Path:
        if self.root is None:
            raise RuntimeError("LocalPgBouncer is not started")
        return self.root / "pgbouncer.log"

    def start(self) -> Self:
        if self._proc is not None:
            return self
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.access(binary, os.X_OK):
            raise PostgresStartError(
                "pgbouncer not found: run scripts/ensure-system-deps.sh (Debian's pgbouncer)"
            )
        # PgBouncer refuses to run as root, like PostgreSQL.
        self._account = _service_account()
        base = Path(tempfile.gettempdir())
        if self._account is not None and not _traversable_by_others(base):
            base = Path("/tmp")  # noqa: S108 - the pooler's user must be able to reach its dir
        self.root = Path(tempfile.mkdtemp(prefix="vidpipe-pgbouncer-", dir=base))
        atexit.register(self.stop)
        try:
            for attempt in range(3):
                self._port = free_ports(1)[0]
                self._write_config()
                self._launch(binary)
                try:
                    self._wait_ready()
                    break
                except PostgresStartError:
                    tail = log_tail(self.log_file)
                    self._kill()
                    if "Address already in use" in tail and attempt < 2:
                        continue
                    raise
        except BaseException:
            self.stop()
            raise
        log.info("local PgBouncer (transaction mode) ready at 127.0.0.1:%s", self._port)
        return self

    def stop(self) -> None:
        atexit.unregister(self.stop)
        self._kill()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        self._port = None

    def _write_config(self) -> None:
        assert self.root is not None and self._port is not None
        server = self._server
        user = server.username or "postgres"
        target = f"host={server.host or '127.0.0.1'} port={server.port or 5432} user={user}"
        if server.password:
            target += f" password={server.password}"
        # Clients are trusted on loopback; the pooler logs in to the server with the URL's user.
        (self.root / "userlist.txt").write_text(f'"{user}" ""\n')
        config = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self._port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.root / "userlist.txt"),
            "pool_mode": "transaction",
            "default_pool_size": str(self.pool_size),
            "max_client_conn": "500",
            "server_reset_query": "DISCARD ALL",
            "server_reset_query_always": "1",
            # psycopg sends none of these, other clients may: accept them instead of failing.
            "ignore_startup_parameters": "extra_float_digits,options,search_path",
            "logfile": str(self.log_file),
            "pidfile": str(self.root / "pgbouncer.pid"),
        }
        lines = ["[databases]", f"* = {target}", "", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in config.items()]
        path = self.root / "pgbouncer.ini"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        if self._account is not None:
            for item in (self.root, path, self.root / "userlist.txt"):
                os.chown(item, self._account.pw_uid, self._account.pw_gid)

    def _launch(self, binary: str) -> None:
        assert self.root is not None
        account = self._account
        user_args: dict[str, Any] = (
            {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            if account is not None
            else {}
        )
        with open(self.root / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(
                [binary, str(self.root / "pgbouncer.ini")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
                preexec_fn=death_signal_preexec(signal.SIGTERM),
                **user_args,
            )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise PostgresStartError(f"pgbouncer exited with code {code}\n{self._tails()}")
            try:
                with psycopg.connect(self.bare_url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError as exc:
                last_error = exc
            time.sleep(0.1)
        raise PostgresStartError(
            f"PgBouncer did not accept connections within {self.start_timeout_s:.0f} s "
            f"({last_error})\n{self._tails()}"
        )

    def _tails(self) -> str:
        assert self.root is not None
        return "\n".join(
            f"--- tail of {path} ---\n{log_tail(path)}"
            for path in (self.log_file, self.root / "stdout.log")
            if path.exists()
        )

    def _kill(self) -> None:
        if self._proc is not None:
            # SIGINT: PgBouncer's "safe shutdown" waits for clients; SIGTERM stops at once.
            stop_process_group(self._proc, self.stop_timeout_s, signal.SIGTERM)
            self._proc = None
