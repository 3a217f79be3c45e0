# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
export THRNN_HOME ?= $(CURDIR)/var
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON ?= $(CURDIR)/$(VPY)

.PHONY: venv demo test test-fast lint bench clean airflow-ui mlflow-ui cluster-up cluster-down cluster-status

# The pinned requirements, then the project itself, editable: benches, tests and tools import jobs/,
# thrnn/ and bench/ from anywhere without touching sys.path.
$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q -r requirements.txt -c constraints.txt
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(VPY) -m thrnn.pipeline.demo $(DEMO_ARGS)

# The UIs of the demo in the foreground: each prints its URL (Airflow: and the login) and stops with all
# its processes on Ctrl-C or SIGTERM. The launcher puts the venv first on PATH for `airflow standalone`.
AIRFLOW_PORT ?= 8080
MLFLOW_PORT ?= 5000

airflow-ui: venv
	exec $(VPY) -m thrnn.pipeline.ui airflow --port $(AIRFLOW_PORT)

mlflow-ui: venv
	exec $(VPY) -m thrnn.pipeline.ui mlflow --port $(MLFLOW_PORT)

# The production shape of docker/docker-compose.yaml as local processes (PostgreSQL, Redis, MLflow server,
# Spark standalone, Airflow with Celery workers on queues default and gpu), state under CLUSTER_DIR; up
# prints what listens where and returns, down stops every process. docs/operations.md has the details.
CLUSTER_DIR ?= $(THRNN_HOME)/cluster
CLUSTER_ARGS ?=

cluster-up: venv
	$(VPY) -m thrnn.pipeline.cluster up --state $(CLUSTER_DIR) $(CLUSTER_ARGS)

cluster-down:
	$(VPY) -m thrnn.pipeline.cluster down --state $(CLUSTER_DIR)

cluster-status:
	$(VPY) -m thrnn.pipeline.cluster status --state $(CLUSTER_DIR)

test: venv
	$(VPY) -m ruff check .
	$(VPY) -m pytest -q $(PYTEST_ARGS)

# The edit-run loop: no Spark, no Airflow, no PostgreSQL, nothing marked slow. CI runs `test`.
test-fast: venv
	$(VPY) -m pytest -q -m "not spark and not airflow and not postgres and not slow" $(PYTEST_ARGS)

lint: venv
	$(VPY) -m ruff check .

# A cluster running on the state folder is stopped first: removing its files under it would orphan it.
clean:
	@if [ -x $(VPY) ] && [ -d $(CLUSTER_DIR) ]; then $(VPY) -m thrnn.pipeline.cluster down --state $(CLUSTER_DIR); fi
	rm -rf $(THRNN_HOME)
