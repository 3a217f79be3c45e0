"""``make airflow-ui`` and ``make mlflow-ui`` as a user runs them: from a shell without an active venv, on
a free port, reachable through their APIs, and stopped (SIGTERM, or Ctrl-C at the terminal) with no
process left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420, method="thread")]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _user_env(home: Path) -> dict[str, str]:
    """A shell of a user who has not activated the venv: no venv on PATH, no Airflow/MLflow settings."""
    venvs = {str(VENV_BIN), str(Path(sys.executable).parent)}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "MLFLOW", "THRNN_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p not in venvs)
    env["THRNN_HOME"] = str(home)
    return env


def _start(target: str, variable: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    if shutil.which("make", path=env["PATH"]) is None:
        pytest.skip("`make` is not installed")
    if not (VENV_BIN / "python").exists():
        pytest.skip(f"{VENV_BIN.parent} is absent (the Makefile targets run from it)")
    # `-o`: the venv running this test is the one the target uses; never reinstall it from a test.
    return subprocess.Popen(["make", "-s", "-o", ".venv/.installed", target, f"{variable}={port}"],
                            cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def _track(proc: subprocess.Popen, seen: dict[int, psutil.Process]) -> None:
    try:
        for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
            seen.setdefault(p.pid, p)
    except psutil.NoSuchProcess:
        pass


def _get(url: str, token: str | None = None, timeout: float = 5) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path, seen: dict[int, psutil.Process]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        _track(proc, seen)
        if proc.poll() is not None:
            text = log.read_text(errors="replace")
            if "port" in text and "is in use" in text:
                pytest.skip(f"the free port was taken before the server started: {_tail(log, 3)}")
            pytest.fail(f"the UI exited (code {proc.returncode}) before {url} answered:\n{_tail(log)}")
        if _get(url)[0] == 200:
            return
        text = log.read_text(errors="replace")
        if "Exception in thread" in text:  # `airflow standalone` keeps running when a component fails to start
            _stop(proc, signal.SIGTERM, seen, group=False)
            pytest.fail(f"a component of the UI failed to start:\n{_tail(log)}")
        time.sleep(1)
    _stop(proc, signal.SIGTERM, seen, group=False)
    pytest.fail(f"{url} did not answer within {START_TIMEOUT_S} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen, sig: int, seen: dict[int, psutil.Process], *, group: bool) -> None:
    """SIGTERM to make, or SIGINT to its whole process group as a terminal's Ctrl-C sends it."""
    _track(proc, seen)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT_S)


def _leftovers(seen: dict[int, psutil.Process], home: Path) -> list[str]:
    """Processes of the UI still running: any process it started, or any process with its THRNN_HOME."""
    left = {}
    for p in seen.values():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left[p.pid] = p
        except psutil.NoSuchProcess:
            continue
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get("THRNN_HOME") == str(home) \
                    and p.status() != psutil.STATUS_ZOMBIE:
                left[p.pid] = p
        except psutil.Error:
            continue
    out = []
    for p in left.values():
        with_cmd = f"{p.pid}"
        with contextlib.suppress(psutil.Error):
            with_cmd += " " + " ".join(p.cmdline())[:120]
        out.append(with_cmd)
    return out


def _kill(seen: dict[int, psutil.Process]) -> None:
    for p in seen.values():
        with contextlib.suppress(psutil.Error):
            p.kill()


@pytest.mark.airflow
def test_airflow_ui_serves_the_dag_and_stops_with_all_its_processes(tmp_path):
    home = tmp_path / "home"
    port = _free_port()
    env = _user_env(home)
    # The scheduler's and triggerer's log servers have fixed ports too; a UI the user already runs holds them.
    env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(_free_port())
    env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(_free_port())
    log = tmp_path / "airflow-ui.log"
    base = f"http://localhost:{port}"
    seen: dict[int, psutil.Process] = {}
    proc = _start("airflow-ui", "AIRFLOW_PORT", port, env, log)
    try:
        _wait_healthy(proc, f"{base}/api/v2/monitor/health", log, seen)
        password = json.loads((home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        text = log.read_text(errors="replace")
        assert base in text and f"admin / {password}" in text, "the URL and login are printed"

        req = urllib.request.Request(f"{base}/auth/token", method="POST",
                                     data=json.dumps({"username": "admin", "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            token = json.loads(resp.read())["access_token"]
        # The DAG processor parses dags/ after the API answers; the DAG shows up within a minute.
        dag_ids: list[str] = []
        deadline = time.monotonic() + 120
        while "thrnn_nightly" not in dag_ids and time.monotonic() < deadline:
            _track(proc, seen)
            status, body = _get(f"{base}/api/v2/dags?limit=100", token)
            assert status in (0, 200), f"GET /api/v2/dags: {status} {body[:300]!r}"
            if status == 200:
                dag_ids = [d["dag_id"] for d in json.loads(body)["dags"]]
            time.sleep(2)
        assert "thrnn_nightly" in dag_ids, f"DAGs listed: {dag_ids}\n{_tail(log)}"
        assert len(seen) >= 4, "standalone runs its components as processes"

        _stop(proc, signal.SIGTERM, seen, group=False)
        assert proc.poll() is not None, f"make still runs {STOP_TIMEOUT_S} s after SIGTERM:\n{_tail(log)}"
        left = _leftovers(seen, home)
        assert not left, f"left running after SIGTERM: {left}\n{_tail(log)}"
        assert _get(f"{base}/api/v2/monitor/health", timeout=2)[0] == 0, "the port still answers"
    finally:
        _kill(seen)


def test_mlflow_ui_answers_and_stops_on_ctrl_c_with_all_its_processes(tmp_path):
    home = tmp_path / "home"
    port = _free_port()
    log = tmp_path / "mlflow-ui.log"
    base = f"http://localhost:{port}"
    seen: dict[int, psutil.Process] = {}
    proc = _start("mlflow-ui", "MLFLOW_PORT", port, _user_env(home), log)
    try:
        _wait_healthy(proc, f"{base}/health", log, seen)
        assert _get(base)[0] == 200
        assert base in log.read_text(errors="replace"), "the URL is printed"
        _stop(proc, signal.SIGINT, seen, group=True)
        assert proc.poll() is not None, f"make still runs {STOP_TIMEOUT_S} s after Ctrl-C:\n{_tail(log)}"
        left = _leftovers(seen, home)
        assert not left, f"left running after Ctrl-C: {left}\n{_tail(log)}"
    finally:
        _kill(seen)
