"""``make cluster-up`` / ``make cluster-down``: the production shape of docker/docker-compose.yaml as local processes.

The same services as the compose file, started from the venv's packages and the machine's PostgreSQL
and Redis binaries instead of images: PostgreSQL (databases ``airflow``, ``mlflow``, ``warehouse``),
Redis (Celery broker), an MLflow tracking server on PostgreSQL with proxied artifacts, a Spark
standalone master and worker (the pip pyspark's ``spark-class``, the driver's own Python), and
Airflow 3 with the CeleryExecutor: the one-shot init (``db migrate``, pool ``gpu``), api-server,
scheduler, dag-processor, triggerer, a Celery worker on queue ``default`` and one on queue ``gpu``.
Every service listens on 127.0.0.1 on a free port; every file (databases, logs, artifacts, Airflow
and THRNN homes) lives under one state folder. docs/operations.md ("The production shape on one
machine") lists the commands, ports and what the cluster test checks.

Each service runs in its own process group, and every process carries ``THRNN_CLUSTER=<state folder>``
in its environment, so :meth:`Cluster.stop` (also ``python -m thrnn.pipeline.cluster down`` from
another shell) finds and ends all of them, including processes that left their group.

Where this differs from the compose file on purpose (``LOCAL_ONLY``): addresses and ports, folders,
sizes (Spark worker cores and memory, API workers), ``THRNN_DEVICE`` of the ``gpu`` worker (``auto``:
a machine without a GPU trains on its CPU), and the cron schedule, off unless ``--scheduled``
(``AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE``), so that unpausing the DAG does not start last night's run
with the default params. tests/cluster/test_compose.py holds the two together.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker" / "docker-compose.yaml"
POSTGRES_INIT_SQL = REPO / "docker" / "postgres-init.sql"
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
MARKER = "THRNN_CLUSTER"  # in the environment of every process of a cluster: its state folder
STATE_FILE = "cluster.json"
DB_USER = "thrnn"
ADMIN = "admin"
GPU_QUEUE = "gpu"
GPU_POOL = "gpu"
GPU_POOL_SLOTS = 1
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
# Names the MLflow server answers to (its Host-header check is on by default in the pinned MLflow): the
# compose service name for the Airflow containers, localhost for the published port.
MLFLOW_ALLOWED_HOSTS = "mlflow,mlflow:5000,localhost,localhost:5000"
SPARK_MASTER_COMMAND = ("org.apache.spark.deploy.master.Master",)
SPARK_WORKER_COMMAND = ("org.apache.spark.deploy.worker.Worker",)
# The tracking server sends no usage telemetry (a server usually has no internet access either).
MLFLOW_SERVER_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true"}
START_TIMEOUT_S = 240.0
DEFAULT_STOP_GRACE_S = 20.0
MLFLOW_STOP_GRACE_S = 5.0  # its job consumers (huey) outlived SIGTERM by over 20 s here; they hold no state
KILL_GRACE_S = 5.0
# Environment of the compose file that is set per host here (addresses, folders, sizes, the schedule);
# everything else of the Airflow services' environment is the same name with the same meaning.
LOCAL_ONLY = frozenset({
    "AIRFLOW_HOME", "AIRFLOW__API__HOST", "AIRFLOW__API__PORT", "AIRFLOW__API__WORKERS",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE", "PATH", "PYTHONPATH", "PYSPARK_PYTHON", "SPARK_LOCAL_IP", MARKER,
    "THRNN_INPUT_PATHS",  # where this host's raw logs are (the compose file: /data, mounted from THRNN_DATA_DIR)
})


# ------------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Layout:
    """Every path of a cluster, under one state folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres"

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    @property
    def mlartifacts(self) -> Path:
        """``--artifacts-destination`` of the MLflow server (clients never write here themselves)."""
        return self.root / "mlartifacts"

    @property
    def spark(self) -> Path:
        return self.root / "spark"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def thrnn_home(self) -> Path:
        """THRNN_HOME of every task (run folders ``runs/<dataset>/<date>/``), shared by both workers."""
        return self.root / "home"

    @property
    def logs(self) -> Path:
        """One log per service: ``<service>.log``."""
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"


@dataclass(frozen=True)
class Ports:
    postgres: int
    redis: int
    mlflow: int
    spark_master: int
    spark_master_ui: int
    spark_worker_ui: int
    airflow_api: int
    worker_log_default: int
    worker_log_gpu: int
    trigger_log: int

    @classmethod
    def free(cls) -> Ports:
        """Ports nothing listens on now (all held open together, so they are distinct)."""
        socks = []
        try:
            for _ in cls.__dataclass_fields__:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((HOST, 0))
                socks.append(s)
            return cls(*(s.getsockname()[1] for s in socks))
        finally:
            for s in socks:
                s.close()


@dataclass(frozen=True)
class Secrets:
    """Generated once per state folder (``secrets.json``, mode 0600) and reused by later starts."""

    postgres_password: str
    jwt_secret: str
    admin_password: str

    @classmethod
    def load_or_create(cls, layout: Layout) -> Secrets:
        path = layout.secrets_file
        if path.exists():
            return cls(**json.loads(path.read_text()))
        made = cls(*(secrets.token_urlsafe(18) for _ in range(3)))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(made.__dict__))
        path.chmod(0o600)
        return made


@dataclass(frozen=True)
class Options:
    """What a caller may choose; sizes are for a small machine (the compose file's are for a server)."""

    spark_worker_cores: int = 2
    spark_worker_memory: str = "1g"
    default_concurrency: int = 2
    gpu_device: str = "auto"
    scheduled: bool = False
    extra_env: Mapping[str, str] = field(default_factory=dict)  # every service, e.g. THRNN_TASK_RETRIES


# ------------------------------------------------------------------------------------------- topology
@dataclass(frozen=True)
class Service:
    """One service of the compose file as a local process."""

    name: str  # the compose service name
    argv: tuple[str, ...]
    env: Mapping[str, str]
    url: str  # where it listens (for the printout)
    after: tuple[str, ...] = ()  # compose depends_on: started once these are ready (a one-shot: has exited 0)
    one_shot: bool = False  # airflow-init: runs to completion before the services after it start
    as_postgres: bool = False  # PostgreSQL refuses to run as root
    stop_signal: int = signal.SIGTERM  # to the whole group; PostgreSQL: SIGINT to the postmaster (fast shutdown)
    stop_grace: float = DEFAULT_STOP_GRACE_S  # seconds between the stop signal and SIGKILL
    # the part of argv after the program that is the compose file's command, for tests/cluster/test_compose.py
    compose_command: tuple[str, ...] = ()


def database_url(ports: Ports, sec: Secrets, db: str, driver: str = "postgresql") -> str:
    return f"{driver}://{DB_USER}:{sec.postgres_password}@{HOST}:{ports.postgres}/{db}"


def airflow_env(layout: Layout, ports: Ports, sec: Secrets, options: Options) -> dict[str, str]:
    """The ``x-airflow-common`` environment of the compose file, for this host."""
    # SQLAlchemy's psycopg (3) dialects, sync and async: the driver the project pins (requirements.txt);
    # without the async URL Airflow derives one for asyncpg, which is not installed
    airflow_db = database_url(ports, sec, "airflow", "postgresql+psycopg")
    env = {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{HOST}:{ports.airflow_api}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": database_url(ports, sec, "airflow", "postgresql+psycopg_async"),
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{airflow_db}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{HOST}:{ports.redis}/0",
        "AIRFLOW__API_AUTH__JWT_SECRET": sec.jwt_secret,
        "THRNN_HOME": str(layout.thrnn_home),
        "MLFLOW_TRACKING_URI": f"http://{HOST}:{ports.mlflow}",
        "THRNN_WAREHOUSE_URL": database_url(ports, sec, "warehouse"),
        "THRNN_SPARK_MASTER": f"spark://{HOST}:{ports.spark_master}",
        "THRNN_TRAIN_QUEUE": GPU_QUEUE,
        "THRNN_TRAIN_POOL": GPU_POOL,
        "THRNN_INPUT_PATHS": options.extra_env.get("THRNN_INPUT_PATHS", ""),
        # local only
        "AIRFLOW_HOME": str(layout.airflow_home),
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(ports.airflow_api),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports.trigger_log),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(options.scheduled),
    }
    return env


def base_env(layout: Layout, options: Options) -> dict[str, str]:
    """What every process of the cluster gets: the caller's environment, the venv first on PATH (Airflow
    and Spark start their own children by name), the repository importable, the marker."""
    # not the caller's Airflow/MLflow/THRNN settings, nor pytest's marker (MLflow reads it as "in a test")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW__", "MLFLOW_", "THRNN_")) and k != "PYTEST_CURRENT_TEST"}
    env.update({
        "PATH": os.pathsep.join(filter(None, [str(BIN), os.environ.get("PATH", "")])),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        # executors run the driver's Python (PySpark sends its interpreter path with each function)
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": HOST,
        "PYTHONUNBUFFERED": "1",
        MARKER: str(layout.root),
    })
    env.update(options.extra_env)
    return env


def topology(layout: Layout, ports: Ports, sec: Secrets, options: Options) -> list[Service]:
    """The services in start order (dependencies first), as the compose file lists them."""
    common = base_env(layout, options)
    af = {**common, **airflow_env(layout, ports, sec, options), **options.extra_env}
    airflow = str(BIN / "airflow")
    spark_class = str(BIN / "spark-class")
    master_url = f"spark://{HOST}:{ports.spark_master}"

    def airflow_service(name: str, command: tuple[str, ...], local: tuple[str, ...] = (),
                        env: Mapping[str, str] | None = None, url: str = "") -> Service:
        return Service(name=name, argv=(airflow, *command, *local), env={**af, **(env or {})}, url=url,
                       after=("postgres", "redis", "airflow-init"), compose_command=command)

    mlflow_cmd = ("server", "--backend-store-uri", database_url(ports, sec, "mlflow", "postgresql+psycopg"),
                  "--artifacts-destination", str(layout.mlartifacts), "--serve-artifacts",
                  "--allowed-hosts", f"{MLFLOW_ALLOWED_HOSTS},{HOST}:{ports.mlflow},localhost:{ports.mlflow}")
    return [
        Service("postgres", (
            _pg_bin("postgres"), "-D", str(layout.pgdata), "-p", str(ports.postgres),
            "-c", f"listen_addresses={HOST}", "-c", "unix_socket_directories=", "-c", "max_connections=200",
        ), common, f"postgresql://{HOST}:{ports.postgres} (databases airflow, mlflow, warehouse)",
            as_postgres=True, stop_signal=signal.SIGINT),
        Service("redis", (
            _redis_bin(), "--bind", HOST, "--port", str(ports.redis), "--dir", str(layout.redis),
            "--save", "", "--appendonly", "no", "--daemonize", "no",
        ), common, f"redis://{HOST}:{ports.redis}/0"),
        Service("mlflow", (
            str(BIN / "mlflow"), *mlflow_cmd, "--host", HOST, "--port", str(ports.mlflow), "--workers", "1",
        ), {**common, **MLFLOW_SERVER_ENV}, f"http://{HOST}:{ports.mlflow}", after=("postgres",),
            stop_grace=MLFLOW_STOP_GRACE_S, compose_command=mlflow_cmd),
        # the compose file's commands; where they listen comes from the variables Spark's scripts read
        Service("spark-master", (spark_class, *SPARK_MASTER_COMMAND), {
            **common, "SPARK_MASTER_HOST": HOST, "SPARK_MASTER_PORT": str(ports.spark_master),
            "SPARK_MASTER_WEBUI_PORT": str(ports.spark_master_ui), "SPARK_LOCAL_DIRS": str(layout.spark / "local")},
            f"{master_url}  UI http://{HOST}:{ports.spark_master_ui}", compose_command=SPARK_MASTER_COMMAND),
        Service("spark-worker", (spark_class, *SPARK_WORKER_COMMAND, master_url), {
            **common, "SPARK_WORKER_CORES": str(options.spark_worker_cores),
            "SPARK_WORKER_MEMORY": options.spark_worker_memory, "SPARK_WORKER_WEBUI_PORT": str(ports.spark_worker_ui),
            "SPARK_WORKER_DIR": str(layout.spark / "work"), "SPARK_LOCAL_DIRS": str(layout.spark / "local")},
            f"UI http://{HOST}:{ports.spark_worker_ui}", after=("spark-master",),
            compose_command=(*SPARK_WORKER_COMMAND, master_url)),
        # the compose file's init script, run by bash with the venv's airflow first on PATH
        Service("airflow-init", ("/bin/bash", "-c", INIT_SCRIPT), af, "db migrate, pool gpu",
                after=("postgres", "redis"), one_shot=True, compose_command=("-c", INIT_SCRIPT)),
        airflow_service("airflow-apiserver", ("api-server",), url=f"http://{HOST}:{ports.airflow_api}"),
        airflow_service("airflow-scheduler", ("scheduler",)),
        airflow_service("airflow-dag-processor", ("dag-processor",)),
        airflow_service("airflow-triggerer", ("triggerer",)),
        airflow_service("airflow-worker", ("celery", "worker", "--queues", "default",
                                           "--concurrency", str(options.default_concurrency)),
                        ("--celery-hostname", "default@%h"),
                        {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports.worker_log_default)},
                        url=f"queue default, logs on :{ports.worker_log_default}"),
        airflow_service("airflow-worker-gpu", ("celery", "worker", "--queues", GPU_QUEUE, "--concurrency", "1"),
                        ("--celery-hostname", "gpu@%h"),
                        {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports.worker_log_gpu),
                         "THRNN_DEVICE": options.extra_env.get("THRNN_DEVICE", options.gpu_device)},
                        url=f"queue {GPU_QUEUE}, logs on :{ports.worker_log_gpu}"),
    ]


# airflow-init (the compose file's script): the metadata schema, then the train task's pool.
INIT_SCRIPT = f"""set -e
airflow db migrate
airflow pools set {GPU_POOL} {GPU_POOL_SLOTS} "training on the GPU worker"
"""


# ------------------------------------------------------------------------------------------- binaries
def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    return str(candidates[-1]) if candidates else name


def _redis_bin() -> str:
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def missing_requirements() -> list[str]:
    """Why a cluster cannot start on this machine (empty when it can)."""
    out = []
    if not Path(_pg_bin("postgres")).exists() or not Path(_pg_bin("initdb")).exists():
        out.append("PostgreSQL server binaries (postgres, initdb) not found (apt-get install postgresql)")
    if not Path(_redis_bin()).exists():
        out.append("redis-server not found (apt-get install redis-server)")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        out.append("no Java for Spark (java on PATH or JAVA_HOME)")
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            out.append("running as root without a 'postgres' user to run PostgreSQL as")
    try:
        import airflow.providers.celery  # noqa: F401
    except ImportError:
        out.append("apache-airflow-providers-celery is not installed (pip install -r requirements.txt)")
    return out


# ------------------------------------------------------------------------------------------- checks
def http_get(url: str, timeout: float = 5, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError, ValueError):
        return 0, b""


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _postgres_ready(ports: Ports, sec: Secrets) -> bool:
    import psycopg

    try:
        with psycopg.connect(database_url(ports, sec, "postgres"), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _json(url: str) -> Any:
    status, body = http_get(url)
    return json.loads(body) if status == 200 else None


def _airflow_components_healthy(ports: Ports) -> bool:
    health = _json(f"http://{HOST}:{ports.airflow_api}/api/v2/monitor/health") or {}
    return all((health.get(k) or {}).get("status") == "healthy"
               for k in ("metadatabase", "scheduler", "triggerer", "dag_processor"))


def _log_has(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text(errors="replace")


def readiness(service: str, layout: Layout, ports: Ports, sec: Secrets) -> Callable[[], bool] | None:
    checks: dict[str, Callable[[], bool]] = {
        "postgres": lambda: _postgres_ready(ports, sec),
        "redis": lambda: _redis_ping(ports.redis),
        "mlflow": lambda: http_get(f"http://{HOST}:{ports.mlflow}/health")[0] == 200,
        "spark-master": lambda: _json(f"http://{HOST}:{ports.spark_master_ui}/json/") is not None,
        "spark-worker": lambda: (_json(f"http://{HOST}:{ports.spark_master_ui}/json/") or {}).get(
            "aliveworkers", 0) >= 1,
        "airflow-apiserver": lambda: http_get(f"http://{HOST}:{ports.airflow_api}/api/v2/monitor/health")[0] == 200,
        # Celery prints "<node> ready." once it consumes its queues
        "airflow-worker": lambda: _log_has(layout.log("airflow-worker"), " ready."),
        "airflow-worker-gpu": lambda: _log_has(layout.log("airflow-worker-gpu"), " ready."),
    }
    return checks.get(service)


# ------------------------------------------------------------------------------------------- processes
def _tail(path: Path, n: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def _give_to_postgres(path: Path) -> None:
    """Hand ``path`` to the postgres user and let it reach the folder (pytest's temp folders are 0700)."""
    import pwd

    pw = pwd.getpwnam("postgres")
    path.mkdir(parents=True, exist_ok=True)
    for p in [path, *path.rglob("*")]:
        os.chown(p, pw.pw_uid, pw.pw_gid)
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            with contextlib.suppress(OSError):
                parent.chmod(mode | 0o001)  # traverse only, no listing


def _postgres_user() -> dict[str, Any]:
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


def _processes_of(root: Path, leaders: Mapping[int, float] | None = None) -> list[Any]:
    """Every live process of the cluster: carrying the marker, or in the group of a recorded leader."""
    import psutil

    found: dict[int, psutil.Process] = {}
    groups = set()
    for pid, created in (leaders or {}).items():
        if _leader_alive(pid, created):
            groups.add(pid)  # each leader was started in a session of its own: its group id is its pid
    me = os.getpid()
    for p in psutil.process_iter():
        if p.pid == me:
            continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            if (groups and os.getpgid(p.pid) in groups) or p.environ().get(MARKER) == str(root):
                found[p.pid] = p
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return list(found.values())


def _wait_gone(procs: list[Any], timeout: float) -> list[Any]:
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p for p in alive if _running(p)]


def _running(p: Any) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _leader_alive(pid: int, created: float) -> bool:
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - created) < 1.0  # not a recycled pid
    except psutil.Error:
        return False


def stop_processes(root: Path, leaders: Mapping[int, float], signals: Mapping[int, int] | None = None,
                   databases: tuple[int, ...] = (), graces: Mapping[int, float] | None = None) -> list[int]:
    """Stops every process of the cluster at ``root``; returns the pids that needed SIGKILL.

    ``leaders``: pid -> start time of each service's first process (each leads its own process group).
    The services go first, each group with its stop signal (``signals``, default SIGTERM) and, after its
    grace (``graces``, default 20 s), SIGKILL; then the databases they were using (``databases``: the
    postmaster's and redis' pids) the same way; then anything of the cluster still alive (found by its
    marker, e.g. a process that left its group) is killed.
    """
    import psutil

    killed: list[int] = []
    db_groups = set(databases)
    services = {p: c for p, c in leaders.items() if p not in db_groups}
    dbs = {p: c for p, c in leaders.items() if p in db_groups}
    for phase in (services, dbs):
        for pid, created in phase.items():
            if not _leader_alive(pid, created):
                continue
            sig = (signals or {}).get(pid, signal.SIGTERM)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if sig == signal.SIGINT:
                    os.kill(pid, sig)  # the postmaster: fast shutdown, it stops its own backends
                else:
                    os.killpg(pid, sig)
        groups = {p: _pgid(p) for p in _processes_of(root, phase)}
        procs = {p: g for p, g in groups.items() if phase is dbs or g not in db_groups}
        started = time.monotonic()
        longest = max([(graces or {}).get(g, DEFAULT_STOP_GRACE_S) for g in procs.values()], default=0.0)
        while True:
            alive = [p for p in procs if _running(p)]
            waited = time.monotonic() - started
            if not alive:
                break
            for p in alive:
                if waited >= (graces or {}).get(procs[p], DEFAULT_STOP_GRACE_S) or waited >= longest:
                    with contextlib.suppress(psutil.Error):
                        p.kill()
                        killed.append(p.pid)
            if waited >= longest:
                break
            time.sleep(0.2)
        _wait_gone([p for p in procs if _running(p)], KILL_GRACE_S)
    rest = _processes_of(root, leaders)  # anything that escaped its group
    for p in rest:
        with contextlib.suppress(psutil.Error):
            p.kill()
            killed.append(p.pid)
    _wait_gone(rest, KILL_GRACE_S)
    return killed


def _pgid(p: Any) -> int | None:
    try:
        return os.getpgid(p.pid)
    except (ProcessLookupError, PermissionError):
        return None


# ------------------------------------------------------------------------------------------- the cluster
@dataclass
class Started:
    service: Service
    proc: subprocess.Popen
    created: float  # the process's start time (psutil), to recognise it later
    log: Path
    spawned: float = field(default_factory=time.monotonic)


class ClusterError(RuntimeError):
    pass


class Cluster:
    """The services of the compose file as local processes; ``with Cluster(folder) as c:`` stops them all."""

    def __init__(self, state: Path | str, options: Options | None = None, ports: Ports | None = None,
                 echo: Callable[[str], None] | None = print, stop_with_caller: bool = False) -> None:
        """``stop_with_caller``: a watcher process stops the cluster when this process ends without doing
        so (killed, or a test run's hard timeout), so no cluster outlives the tests that started it."""
        self.stop_with_caller = stop_with_caller
        self._watcher: subprocess.Popen | None = None
        self.layout = Layout(Path(state))
        self.options = options or Options()
        self.ports = ports or Ports.free()
        self.secrets = Secrets.load_or_create(self.layout)
        self.services = topology(self.layout, self.ports, self.secrets, self.options)
        self.started: list[Started] = []
        self.echo = echo or (lambda _msg: None)

    # --- what the tests and the printout use
    @property
    def env(self) -> dict[str, str]:
        """The environment of the Airflow services (URLs of MLflow, the warehouse, Spark, ...)."""
        return dict(self.service("airflow-scheduler").env)

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    @property
    def airflow_url(self) -> str:
        return f"http://{HOST}:{self.ports.airflow_api}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.ports.mlflow}"

    @property
    def spark_master_ui(self) -> str:
        return f"http://{HOST}:{self.ports.spark_master_ui}"

    @property
    def warehouse_url(self) -> str:
        return self.env["THRNN_WAREHOUSE_URL"]

    @property
    def admin_password(self) -> str:
        return self.secrets.admin_password

    # --- start
    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Starts each service once what it comes after is ready (as compose's depends_on), independent ones
        side by side; returns when every one is ready and the Airflow components report healthy."""
        existing = self._recorded_alive()
        if existing:
            raise ClusterError(f"a cluster already runs on {self.layout.root} (pids {existing}); "
                               "stop it first: make cluster-down")
        problems = missing_requirements()
        if problems:
            raise ClusterError("cannot start the cluster: " + "; ".join(problems))
        self._prepare()
        if self.stop_with_caller:
            self._start_watcher()
        t0 = time.monotonic()
        pending = list(self.services)
        waiting: dict[str, tuple[Started, float]] = {}  # started, not ready yet: (process, its deadline)
        ready: set[str] = set()
        while pending or waiting:
            for svc in [s for s in pending if set(s.after) <= ready]:
                pending.remove(svc)
                waiting[svc.name] = (self._spawn(svc), time.monotonic() + START_TIMEOUT_S * (2 if svc.one_shot else 1))
            for name, (st, deadline) in list(waiting.items()):
                if self._is_ready(st):
                    del waiting[name]
                    ready.add(name)
                    took = f"in {time.monotonic() - st.spawned:4.0f} s"
                    what = f"done {took}" if st.service.one_shot else f"ready {took}" if self._has_check(st) else "started"
                    self.echo(f"[cluster] {name:<22} {what:<14} {st.service.url}")
                elif time.monotonic() > deadline:
                    raise ClusterError(f"{name} not ready within {deadline - st.spawned:.0f} s; log {st.log}:\n"
                                       f"{_tail(st.log)}")
            self._check_alive()
            if pending or waiting:
                time.sleep(0.5)
        self._wait_for("Airflow components (scheduler, triggerer, dag-processor) healthy",
                       lambda: _airflow_components_healthy(self.ports), "airflow-scheduler")
        self.echo(f"[cluster] up in {time.monotonic() - t0:.0f} s; state {self.layout.root}")
        self.echo(self.describe())

    def _is_ready(self, st: Started) -> bool:
        if st.service.one_shot:
            code = st.proc.poll()
            if code not in (None, 0):
                raise ClusterError(f"{st.service.name} failed (exit {code}); log {st.log}:\n{_tail(st.log)}")
            return code == 0
        check = readiness(st.service.name, self.layout, self.ports, self.secrets)
        if check is not None and not check():
            return False
        if st.service.name == "postgres":
            self._create_databases()
        return True

    def _has_check(self, st: Started) -> bool:
        return readiness(st.service.name, self.layout, self.ports, self.secrets) is not None

    def _check_alive(self) -> None:
        for st in self.started:
            if not st.service.one_shot and st.proc.poll() is not None:
                raise ClusterError(f"{st.service.name} exited (code {st.proc.returncode}); log {st.log}:\n"
                                   f"{_tail(st.log)}")

    def _prepare(self) -> None:
        lay = self.layout
        for d in (lay.redis, lay.mlartifacts, lay.spark / "work", lay.spark / "local", lay.airflow_home,
                  lay.thrnn_home, lay.logs):
            d.mkdir(parents=True, exist_ok=True)
        # the api-server's Simple auth manager reads the admin password from here (as `airflow standalone`)
        pw_file = lay.airflow_home / "simple_auth_manager_passwords.json.generated"
        pw_file.write_text(json.dumps({ADMIN: self.secrets.admin_password}))
        pw_file.chmod(0o600)
        if not (lay.pgdata / "PG_VERSION").exists():
            self._initdb()

    def _initdb(self) -> None:
        lay = self.layout
        if lay.pgdata.exists():
            shutil.rmtree(lay.pgdata)
        init_dir = lay.root / ".pg-init"  # the superuser's password, for initdb only
        init_dir.mkdir(exist_ok=True)
        pwfile = init_dir / "pw"
        pwfile.write_text(self.secrets.postgres_password + "\n")
        pwfile.chmod(0o600)
        try:
            if os.geteuid() == 0:
                _give_to_postgres(lay.pgdata)
                _give_to_postgres(init_dir)
            argv = [_pg_bin("initdb"), "-D", str(lay.pgdata), "-U", DB_USER, f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C"]
            with open(lay.log("initdb"), "wb") as fh:
                done = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, **_postgres_user())
            if done.returncode != 0:
                raise ClusterError(f"initdb failed (exit {done.returncode}):\n{_tail(lay.log('initdb'))}")
        finally:
            shutil.rmtree(init_dir, ignore_errors=True)

    def _create_databases(self) -> None:
        """``airflow`` (the image's POSTGRES_DB), then docker/postgres-init.sql, as the compose file does."""
        import psycopg

        with psycopg.connect(database_url(self.ports, self.secrets, "postgres"), autocommit=True) as conn:
            have = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
            statements = ["CREATE DATABASE airflow", *_sql_statements(POSTGRES_INIT_SQL.read_text())]
            for stmt in statements:
                name = stmt.split()[-1].strip('";').lower()
                if name not in have:
                    conn.execute(stmt)

    def _spawn(self, svc: Service) -> Started:
        log = self.layout.log(svc.name)
        extra: dict[str, Any] = {}
        if svc.as_postgres:
            extra = _postgres_user()
            if extra:
                _give_to_postgres(self.layout.pgdata)
        with open(log, "ab") as fh:
            fh.write(f"\n[cluster] {dt.datetime.now().isoformat(timespec='seconds')} $ "
                     f"{' '.join(_redacted(svc.argv, self.secrets))}\n".encode())
            fh.flush()
            # its own session and process group: stopping it reaches all its children, and a Ctrl-C at
            # the terminal reaches only the launcher
            proc = subprocess.Popen(svc.argv, env=dict(svc.env), cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, **extra)
        import psutil

        created = psutil.Process(proc.pid).create_time()
        started = Started(svc, proc, created, log)
        self.started.append(started)
        self._record()
        return started

    def _wait_for(self, what: str, check: Callable[[], bool], name: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            if check():
                return
            time.sleep(0.5)
        log = self.layout.log(name)
        raise ClusterError(f"{what} not ready within {START_TIMEOUT_S:.0f} s; log {log}:\n{_tail(log)}")

    # --- stop
    def stop(self) -> list[int]:
        """Stops every process this cluster started (and any process carrying its marker); returns the pids
        that needed SIGKILL. Does nothing when it started nothing: a start refused because a cluster already
        runs on the folder must leave that cluster alone (``make cluster-down`` stops it)."""
        if not self.started:
            self._stop_watcher()
            return []
        leaders = {st.proc.pid: st.created for st in self.started}
        signals = {st.proc.pid: st.service.stop_signal for st in self.started}
        databases = tuple(st.proc.pid for st in self.started if st.service.name in ("postgres", "redis"))
        graces = {st.proc.pid: st.service.stop_grace for st in self.started}
        killed = stop_processes(self.layout.root, leaders, signals, databases, graces)
        for st in self.started:
            with contextlib.suppress(Exception):
                st.proc.wait(timeout=1)
        self.started.clear()
        self.layout.state_file.unlink(missing_ok=True)
        self._stop_watcher()
        return killed

    def _start_watcher(self) -> None:
        import psutil

        me = psutil.Process()
        argv = [sys.executable, "-m", "thrnn.pipeline.cluster", "watch", "--state", str(self.layout.root),
                "--owner", f"{me.pid}:{me.create_time()}"]
        env = {k: v for k, v in os.environ.items() if k != MARKER}
        with open(self.layout.log("watch"), "ab") as fh:
            self._watcher = subprocess.Popen(argv, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)

    def _stop_watcher(self) -> None:
        if self._watcher is not None and self._watcher.poll() is None:
            self._watcher.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watcher.wait(10)
        self._watcher = None

    # --- the state file (for `down` from another shell)
    def _record(self) -> None:
        state = {
            "root": str(self.layout.root),
            "ports": self.ports.__dict__,
            "services": [{"name": st.service.name, "pid": st.proc.pid, "created": st.created,
                          "one_shot": st.service.one_shot,
                          "stop_signal": int(st.service.stop_signal), "stop_grace": st.service.stop_grace,
                          "log": str(st.log), "url": st.service.url}
                         for st in self.started],
        }
        tmp = self.layout.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.layout.state_file)

    def _recorded_alive(self) -> list[int]:
        leaders = {int(e["pid"]): float(e["created"]) for e in _read_state(self.layout).get("services", [])}
        return sorted(p.pid for p in _processes_of(self.layout.root, leaders))

    def describe(self) -> str:
        rows = [f"  {st.service.name:<22} pid {st.proc.pid:<8} {st.service.url:<58} log {st.log.name}"
                for st in self.started]
        return "\n".join([
            "[cluster] services (all on 127.0.0.1):", *rows,
            f"  Airflow UI/API   {self.airflow_url}   login {ADMIN} / {self.admin_password}",
            f"  MLflow UI        {self.mlflow_url}",
            f"  Spark master UI  {self.spark_master_ui}",
            f"  warehouse        {_redact_url(self.warehouse_url)}   (password in {self.layout.secrets_file})",
            f"  THRNN_HOME       {self.layout.thrnn_home}",
            f"  logs             {self.layout.logs}",
        ])


def _read_state(layout: Layout) -> dict[str, Any]:
    try:
        return json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        return {}


def _sql_statements(text: str) -> list[str]:
    body = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def _redact_url(url: str) -> str:
    from .settings import _redact

    return _redact(url)


def _redacted(argv: tuple[str, ...], sec: Secrets) -> list[str]:
    return [a.replace(sec.postgres_password, "***") for a in argv]


def _recorded_leaders(layout: Layout) -> dict[int, float]:
    return {int(e["pid"]): float(e["created"]) for e in _read_state(layout).get("services", [])}


def stop_recorded(layout: Layout) -> tuple[list[int], list[int]]:
    """Stops the cluster recorded in the state folder (from any process); (pids killed, pids left)."""
    recorded = _read_state(layout).get("services", [])
    signals = {int(e["pid"]): int(e.get("stop_signal", signal.SIGTERM)) for e in recorded}
    graces = {int(e["pid"]): float(e.get("stop_grace", DEFAULT_STOP_GRACE_S)) for e in recorded}
    dbs = tuple(int(e["pid"]) for e in recorded if e["name"] in ("postgres", "redis"))
    killed = stop_processes(layout.root, _recorded_leaders(layout), signals, dbs, graces)
    layout.state_file.unlink(missing_ok=True)
    return killed, [p.pid for p in _processes_of(layout.root)]


# ------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m thrnn.pipeline.cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["up", "down", "status", "watch"],
                   help="watch: stop the cluster once the process --owner PID:START_TIME has ended (internal)")
    p.add_argument("--owner", default=None, help=argparse.SUPPRESS)
    p.add_argument("--state", type=Path, default=None,
                   help="state folder (default $THRNN_CLUSTER_DIR, else $THRNN_HOME/cluster, else ./var/cluster)")
    p.add_argument("--scheduled", action="store_true",
                   help="keep the DAG's cron schedule (off by default: runs are triggered by hand)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every service, e.g. THRNN_INPUT_PATHS=/data/raw.tsv (the raw logs a run "
                        "reads when its params name none) or THRNN_SPARK_CONF=...; the caller's own THRNN_*, "
                        "AIRFLOW__* and MLFLOW_* variables are not passed on")
    return p


def default_state() -> Path:
    if os.environ.get("THRNN_CLUSTER_DIR"):
        return Path(os.environ["THRNN_CLUSTER_DIR"])
    return Path(os.environ.get("THRNN_HOME") or "var") / "cluster"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    state = (args.state or default_state()).resolve()
    layout = Layout(state)
    if args.command == "down":
        if not _processes_of(layout.root, _recorded_leaders(layout)):
            print(f"[cluster] nothing runs on {layout.root}")
            layout.state_file.unlink(missing_ok=True)
            return 0
        print(f"[cluster] stopping the cluster on {layout.root} ...", flush=True)
        killed, left = stop_recorded(layout)
        if killed:
            print(f"[cluster] killed processes that ignored SIGTERM: {killed}")
        if left:
            print(f"[cluster] still running: {left}", file=sys.stderr)
            return 1
        print("[cluster] stopped; state kept (remove the folder to start afresh)")
        return 0
    if args.command == "watch":
        pid, _, created = (args.owner or "").partition(":")
        while _leader_alive(int(pid), float(created)):
            time.sleep(1.0)
        if layout.state_file.exists():  # the owner ended without stopping its cluster
            print(f"[cluster] {dt.datetime.now().isoformat(timespec='seconds')} owner {pid} gone; stopping "
                  f"the cluster on {layout.root}", flush=True)
            killed, left = stop_recorded(layout)
            print(f"[cluster] stopped (killed {killed}, left {left})", flush=True)
        return 0
    if args.command == "status":
        recorded = _read_state(layout)
        leaders = {int(e["pid"]): float(e["created"]) for e in recorded.get("services", [])}
        alive = {p.pid for p in _processes_of(layout.root, leaders)}
        if not recorded:
            print(f"[cluster] nothing runs on {layout.root}", flush=True)
            return 1
        down = [e["name"] for e in recorded["services"] if e["pid"] not in alive and not e.get("one_shot")]
        for e in recorded["services"]:
            state = "up  " if e["pid"] in alive else "done" if e.get("one_shot") else "DOWN"
            print(f"  {e['name']:<22} pid {e['pid']:<8} {state} {e['url']}")
        return 1 if down else 0
    extra = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env takes KEY=VALUE, got {item!r}")
        extra[key] = value
    cluster = Cluster(state, Options(scheduled=args.scheduled, extra_env=extra), echo=lambda m: print(m, flush=True))
    try:
        cluster.start()
    except BaseException as err:
        print(f"[cluster] not started: {err}", file=sys.stderr, flush=True)
        if cluster.started:
            print("[cluster] stopping what had started ...", file=sys.stderr, flush=True)
            cluster.stop()
        return 1
    print("[cluster] running in the background; stop it with: make cluster-down", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
