"""
A real Airflow deployment on this machine: PostgreSQL, the simulator and Airflow's components.

Every process is started in a session of its own, with its output in ``<logs>/<name>.log``, and
carries a marker in its environment; :meth:`Deployment.stop` ends them all and then looks for
any process that still carries the marker (a task runner a killed scheduler left behind, say).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# Each runs as `airflow <name>`; the api-server's host and port come from [api] in the environment.
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN_USER = "admin"
MARKER = "AUTOCALLS_E2E_RUN"


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Nothing listens on the port any more (connections in TIME_WAIT don't count)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def wait_until(check: Callable[[], Any], *, timeout: float, interval: float = 0.5, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except AssertionError:  # the check saw something that waiting won't fix
            raise
        except Exception as exc:  # the thing polled is not up yet
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r})")


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster from the system's packages, on 127.0.0.1."""

    bindir: Path
    datadir: Path
    log: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_hex(12))

    @staticmethod
    def find_bindir() -> Path:
        """The newest ``/usr/lib/postgresql/<major>/bin`` with a server in it."""
        candidates = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
        )
        if not candidates:
            raise RuntimeError(
                "no PostgreSQL server found under /usr/lib/postgresql; "
                "install Debian's 'postgresql' package (make e2e-deps)"
            )
        return candidates[-1].parent

    def _as_owner(self, *command: str) -> list[str]:
        # PostgreSQL refuses to run as root; the Debian package creates the 'postgres' user.
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return list(command)

    def _run(self, *command: str, stdin: str | None = None) -> None:
        result = subprocess.run(
            self._as_owner(*command), input=stdin, capture_output=True, text=True, env=self.env
        )
        if result.returncode:
            raise RuntimeError(
                f"{Path(command[0]).name} failed ({result.returncode}): {result.stderr.strip()}"
            )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://airflow:{self.password}@127.0.0.1:{self.port}/airflow"

    def start(self) -> None:
        self.datadir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.datadir, "postgres", "postgres")
            shutil.chown(self.datadir.parent, "postgres", "postgres")
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
        )
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            options,
            "-w",
            "start",
        )
        # On stdin, so the password is in no command line, error message or log.
        sql = (
            f"CREATE ROLE airflow LOGIN PASSWORD '{self.password}';\nCREATE DATABASE airflow OWNER airflow;\n"
        )
        psql = [str(self.bindir / "psql"), "-h", str(self.datadir), "-p", str(self.port), "-U", "postgres"]
        self._run(*psql, "-q", "-v", "ON_ERROR_STOP=1", "-f", "-", stdin=sql)

    @property
    def logfile(self) -> Path:
        # The server writes its log as 'postgres'; it is copied next to the others on stop.
        return self.datadir.parent / "postgresql.log"

    def stop(self) -> None:
        """Stop the server (fast shutdown; SIGKILL if that fails) and keep its log."""
        pidfile = self.datadir / "postmaster.pid"
        if pidfile.exists():
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")
            except RuntimeError:
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        if self.logfile.exists():
            shutil.copy(self.logfile, self.log)


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    logfile: IO[bytes]

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def stop(self, grace: float = 20) -> None:
        """SIGTERM to its whole session, SIGKILL after ``grace`` seconds."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait()
        self.signal(signal.SIGKILL)  # anything of its session that outlived it
        self.logfile.close()


class Deployment:
    """
    PostgreSQL, the simulator and Airflow 3's components, each a process of its own.

    :param workdir: where the Airflow home, the DAGs and the database files go (emptied first).
    :param logs: where each component's log is kept.
    :param dags: DAG files to copy into the deployment's DAG folder, as ``{file name: source}``.
    """

    def __init__(self, workdir: Path, logs: Path, dags: dict[str, str]) -> None:
        self.workdir = workdir
        self.logs = logs
        self.run_id = secrets.token_hex(6)
        self.bin = Path(sys.executable).parent
        self.api_port = free_port()
        self.sim_port = free_port()
        self.sim_key = "e2e-" + secrets.token_hex(8)
        self.admin_password = secrets.token_hex(8)
        self.components: dict[str, Component] = {}
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
        for folder in (workdir / "dags", workdir / "home", logs):
            folder.mkdir(parents=True)
        for name, source in dags.items():
            (workdir / "dags" / name).write_text(source)
        # PostgreSQL's files live where its own user can reach them, whatever this folder's modes.
        self.pg_root = Path(tempfile.mkdtemp(prefix="autocalls-e2e-pg-"))
        self.postgres = Postgres(
            Postgres.find_bindir(),
            self.pg_root / "data",
            logs / "postgresql.log",
            env={**os.environ, MARKER: self.run_id},
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def ports(self) -> dict[str, int]:
        return {"api-server": self.api_port, "simulator": self.sim_port, "postgresql": self.postgres.port}

    def environment(self) -> dict[str, str]:
        """What every Airflow process of the deployment runs with."""
        home = self.workdir / "home"
        passwords = home / "passwords.json"
        if not passwords.exists():
            passwords.write_text(json.dumps({ADMIN_USER: self.admin_password}))
        secret = self._secret("jwt")
        env = {
            **os.environ,
            MARKER: self.run_id,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.workdir / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__FERNET_KEY": self._secret("fernet"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secret,
            "AIRFLOW__API_AUTH__JWT_SECRET": secret,
            # The DAG folder is read once at start; these keep a restarted component quick to catch up.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "10",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "tasks"),
            "AIRFLOW__AUTOCALLS__LEDGER_LOCATION": str(self.workdir / "ledger"),
        }
        env.pop("AIRFLOW_CONN_AUTOCALLS_DEFAULT", None)
        return env

    def _secret(self, name: str) -> str:
        path = self.workdir / f"{name}.secret"
        if not path.exists():
            if name == "fernet":
                from cryptography.fernet import Fernet

                path.write_text(Fernet.generate_key().decode())
            else:
                path.write_text(secrets.token_urlsafe(32))
        return path.read_text()

    # -- processes -------------------------------------------------------------------------------

    def start(
        self, name: str, command: list[str] | None = None, env: dict[str, str] | None = None
    ) -> Component:
        """Start a component (again); its log is appended to, with a line marking each start."""
        if command is None:
            command = [str(self.bin / "airflow"), name]
        log = (self.logs / f"{name}.log").open("ab")
        log.write(f"\n===== e2e: starting {name} at {time.strftime('%H:%M:%S')}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            env={**self.environment(), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.components[name] = Component(name, process, log)
        return self.components[name]

    def kill(self, name: str) -> None:
        """SIGKILL a component and everything of its session, as a lost machine would."""
        component = self.components.pop(name)
        component.signal(signal.SIGKILL)
        component.process.wait()
        component.logfile.close()

    def airflow(self, *args: str, timeout: float = 300) -> str:
        """Run an ``airflow`` command against the deployment; its output is returned and logged."""
        result = subprocess.run(
            [str(self.bin / "airflow"), *args],
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        command = self.masked(" ".join(args))
        with (self.logs / "cli.log").open("a") as log:
            log.write(f"\n$ airflow {command}\n{self.masked(result.stdout + result.stderr)}")
        if result.returncode:
            raise RuntimeError(f"airflow {command} failed ({result.returncode}); see {self.logs / 'cli.log'}")
        return result.stdout

    @property
    def secrets(self) -> dict[str, str]:
        """What must appear in no log, by name: the API key, the database and admin passwords."""
        return {
            "API key": self.sim_key,
            "database password": self.postgres.password,
            "admin password": self.admin_password,
        }

    def masked(self, text: str) -> str:
        for secret in self.secrets.values():
            text = text.replace(secret, "***")
        return text

    def start_simulator(self) -> None:
        # The key goes by environment: on no command line, and not printed in the simulator's log.
        command = [str(self.bin / "autocalls-simulator"), "--port", str(self.sim_port)]
        self.start("simulator", command, {"AUTOCALLS_SIMULATOR_API_KEY": self.sim_key})
        wait_until(lambda: self.sim("GET", "state"), timeout=30, what="the simulator")

    def sim(self, method: str, endpoint: str, payload: dict[str, Any] | None = None) -> Any:
        """Call one of the simulator's ``/_sim`` control endpoints."""
        request = urllib.request.Request(
            f"{self.sim_url}/_sim/{endpoint}",
            method=method,
            data=None if payload is None else json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def delivered(self) -> list[dict[str, Any]]:
        return list(self.sim("GET", "messages")["messages"])

    def stop(self) -> list[str]:
        """Stop everything that was started, each step whatever the others did; returns what went wrong."""
        problems: list[str] = []
        order = ["scheduler", "triggerer", "dag-processor", "api-server", "simulator"]
        for name in sorted(self.components, key=lambda n: order.index(n) if n in order else len(order)):
            try:
                self.components[name].stop()
            except Exception as exc:
                problems.append(f"stopping {name}: {exc!r}")
        self.components.clear()
        try:
            self.postgres.stop()
        except Exception as exc:
            problems.append(f"stopping PostgreSQL: {exc!r}")
        problems += kill_marked(f"{MARKER}={self.run_id}")
        shutil.rmtree(self.pg_root, ignore_errors=True)
        for name, port in self.ports.items():
            if not port_is_free(port):
                problems.append(f"port {port} ({name}) still in use")
        return problems


def marked_processes(needle: str) -> Iterator[tuple[int, str]]:
    """Processes whose environment holds ``needle`` (``NAME=value``, or ``NAME=`` for any value)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            variables = (entry / "environ").read_bytes().split(b"\0")
            if any(
                v.startswith(needle.encode()) if needle.endswith("=") else v == needle.encode()
                for v in variables
            ):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                yield int(entry.name), command.strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue


def kill_marked(needle: str) -> list[str]:
    """SIGKILL every process :func:`marked_processes` finds; returns a line for each."""
    found = []
    for pid, command in marked_processes(needle):
        found.append(f"stray process {pid}: {command[:200]}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found


def clean_up_earlier_runs() -> list[str]:
    """What an earlier run that was killed outright (SIGKILL, power loss) left behind."""
    found = kill_marked(f"{MARKER}=")
    for folder in Path(tempfile.gettempdir()).glob("autocalls-e2e-pg-*"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((folder / "data" / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
        found.append(f"stale PostgreSQL folder {folder}")
    return found
