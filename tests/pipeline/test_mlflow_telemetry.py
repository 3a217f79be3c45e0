"""MLflow's telemetry thread stays off in pipeline processes (see thrnn/pipeline/__init__.py): on a host
without internet it deletes an environment variable while task threads iterate os.environ, and the
task's MLflow call fails with KeyError '_MLFLOW_TELEMETRY_SESSION_ID'."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# What a task process does: the pipeline package first (the DAG file imports it), then MLflow.
PROBE = """
import json, os
import thrnn.pipeline.settings
import mlflow
from mlflow.telemetry import get_telemetry_client
from mlflow.telemetry.utils import is_telemetry_disabled
print(json.dumps({"client": get_telemetry_client() is not None, "disabled": is_telemetry_disabled(),
                  "session_id": "_MLFLOW_TELEMETRY_SESSION_ID" in os.environ,
                  "flag": os.environ.get("MLFLOW_DISABLE_TELEMETRY")}))
"""
# Variables under which MLflow turns telemetry off by itself (CI, pytest): a worker has none of them.
CI_MARKERS = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
              "BUILDKITE", "CODEBUILD_BUILD_ID", "AZURE_PIPELINES", "BITBUCKET_BUILD_NUMBER", "TEAMCITY_VERSION",
              "TF_BUILD", "DRONE", "APPVEYOR", "HUDSON_URL", "BUILD_ID")


def _probe(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in CI_MARKERS and not k.startswith(("MLFLOW_", "_MLFLOW", "DO_NOT_TRACK"))}
    env.update(extra)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_task_process_starts_no_mlflow_telemetry_thread():
    got = _probe()
    assert got == {"client": False, "disabled": True, "session_id": False, "flag": "true"}


@pytest.mark.slow
def test_an_explicit_setting_of_the_deployment_wins():
    got = _probe(MLFLOW_DISABLE_TELEMETRY="false")
    assert got["flag"] == "false" and got["disabled"] is False
