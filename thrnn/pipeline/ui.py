"""``make airflow-ui`` and ``make mlflow-ui``: the demo's UIs in the foreground, stopped with all their processes.

``python -m thrnn.pipeline.ui airflow`` runs ``airflow standalone`` (scheduler, DAG processor, triggerer and
API server) on the demo's Airflow home; ``python -m thrnn.pipeline.ui mlflow`` runs ``mlflow ui`` on the
demo's tracking store. Both print the URL (and Airflow's login) and stay in the foreground; Ctrl-C or
SIGTERM stops the server and every process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from .demo import REPO, airflow_env, airflow_password
from .settings import PipelineSettings

# The venv's bin folder: `airflow standalone` starts its components by the bare name `airflow`, so this
# folder must come first on PATH even when the venv is not activated (as under `make`).
BIN = Path(sys.executable).parent
# How long each component gets for its own clean shutdown before the next, harder signal.
GRACE_S = 20.0
KILL_GRACE_S = 5.0


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    url: str
    health_url: str
    login: str | None
    # How the shutdown starts: `airflow standalone` stops its components itself on SIGINT (it handles
    # KeyboardInterrupt only; on SIGTERM it dies and leaves them running), while the uvicorn processes of
    # `mlflow ui` each stop cleanly on SIGTERM.
    first_stop: Callable[[subprocess.Popen], None]


def _with_venv_path(env: dict[str, str]) -> dict[str, str]:
    return {**env, "PATH": os.pathsep.join(filter(None, [str(BIN), env.get("PATH", "")]))}


def _sigint_leader(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)


def _sigterm_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)


def airflow_service(settings: PipelineSettings, port: int) -> Service:
    settings.airflow_dir.mkdir(parents=True, exist_ok=True)
    # The same password `make demo` prints; standalone then finds the file and keeps it.
    password = airflow_password(settings)
    env = _with_venv_path(airflow_env(settings))
    env["AIRFLOW__API__PORT"] = str(port)
    # A demo with a generated admin password: reachable from this machine only, like `mlflow ui`.
    env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")
    # The LocalExecutor starts `parallelism` worker processes up front (32 by default); the nightly DAG
    # runs one task at a time, so a few are plenty on a laptop.
    env.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
    # The task processes started from the UI report to the execution API, which defaults to port 8080.
    env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://localhost:{port}/execution/")
    url = f"http://localhost:{port}"
    return Service(
        name="Airflow", argv=[str(BIN / "airflow"), "standalone"], env=env, url=url,
        health_url=f"{url}/api/v2/monitor/health", login=f"admin / {password}", first_stop=_sigint_leader)


def mlflow_service(settings: PipelineSettings, port: int) -> Service:
    if settings.tracking_uri.startswith(("http://", "https://")):
        raise SystemExit(f"MLFLOW_TRACKING_URI is the server {settings.tracking_uri}: open its UI there")
    url = f"http://localhost:{port}"
    # One worker: the demo's UI has one reader and the default four would each load MLflow.
    argv = [str(BIN / "mlflow"), "ui", "--backend-store-uri", settings.tracking_uri,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = _with_venv_path({**os.environ, "THRNN_HOME": str(settings.home)})
    return Service(name="MLflow", argv=argv, env=env, url=url, health_url=f"{url}/health", login=None,
                   first_stop=_sigterm_group)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server can listen on ``host:port`` (both UIs listen on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _track(leader: psutil.Process, seen: dict[int, psutil.Process]) -> None:
    """Remember every process of the server: its descendants and anything left in its process group.

    Remembered early, a process is still found at shutdown after its parent died and it was re-parented;
    psutil.Process keeps its start time, so a recycled pid is never signalled.
    """
    try:
        for p in [leader, *leader.children(recursive=True)]:
            seen.setdefault(p.pid, p)
    except psutil.NoSuchProcess:
        pass


def _group_members(pgid: int, seen: dict[int, psutil.Process]) -> None:
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                seen.setdefault(p.pid, p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue


def _alive(procs: dict[int, psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs.values():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def stop(proc: subprocess.Popen, service: Service, seen: dict[int, psutil.Process]) -> list[int]:
    """Stops the server and every process it started; returns the pids that needed SIGKILL."""
    leader = seen.get(proc.pid)
    if leader is not None:
        _track(leader, seen)
    _group_members(proc.pid, seen)
    if proc.poll() is None:
        service.first_stop(proc)
    killed: list[int] = []
    for sig, grace in ((None, GRACE_S), (signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        if sig is not None:
            for p in _alive(seen):
                try:
                    p.send_signal(sig)
                    if sig == signal.SIGKILL:
                        killed.append(p.pid)
                except psutil.NoSuchProcess:
                    pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            leader_done = proc.poll() is not None  # also reaps the leader, our only direct child
            _group_members(proc.pid, seen)  # a component may have started one more process meanwhile
            if not _alive(seen):
                return killed
            if sig is None and leader_done:
                break  # the leader has finished its own shutdown: what is left gets SIGTERM now
            time.sleep(0.2)
    return killed


def run(service: Service) -> int:
    port = int(service.url.rsplit(":", 1)[1])
    if not port_free(port):
        print(f"[ui] port {port} is in use (another UI still running?); pick another one, e.g. "
              f"make {service.name.lower()}-ui {service.name.upper()}_PORT={port + 1}", file=sys.stderr, flush=True)
        return 2
    requested: list[int] = []
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        requested.append(signum)
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    login = f"  login {service.login}" if service.login else ""
    print(f"[ui] {service.name} UI starting: {service.url}{login}\n"
          f"[ui] Ctrl-C (or SIGTERM) stops it and all its processes", flush=True)
    # Its own process group and session: the terminal's Ctrl-C reaches only this launcher, which then stops
    # the components in order instead of all of them receiving SIGINT at once.
    proc = subprocess.Popen(service.argv, env=service.env, cwd=REPO, start_new_session=True)
    seen: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        seen[proc.pid] = psutil.Process(proc.pid)
    ready = False
    while proc.poll() is None and not stopping.is_set():
        if proc.pid in seen:
            _track(seen[proc.pid], seen)
        if not ready and _healthy(service.health_url):
            ready = True
            print(f"[ui] {service.name} UI ready: {service.url}{login}  (Ctrl-C stops it)", flush=True)
        stopping.wait(1.0)
    code = proc.poll()
    print(f"[ui] stopping {service.name} and its processes ...", flush=True)
    killed = stop(proc, service, seen)
    if killed:
        print(f"[ui] killed processes that ignored SIGTERM: {killed}", flush=True)
    left = _alive(seen)
    if left:
        print(f"[ui] processes still running: {[p.pid for p in left]}", file=sys.stderr, flush=True)
        return 1
    print(f"[ui] {service.name} stopped", flush=True)
    if requested:
        return 0
    print(f"[ui] {service.name} exited on its own (exit {code})", file=sys.stderr, flush=True)
    return code or 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m thrnn.pipeline.ui", description=__doc__.split("\n\n")[0])
    p.add_argument("service", choices=["airflow", "mlflow"], help="which UI to run")
    p.add_argument("--port", type=int, default=None, help="port of the UI (default 8080 for airflow, 5000 for mlflow)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = PipelineSettings.from_env()
    if args.service == "airflow":
        service = airflow_service(settings, args.port or 8080)
    else:
        service = mlflow_service(settings, args.port or 5000)
    return run(service)


if __name__ == "__main__":
    sys.exit(main())
