# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
export THRNN_HOME ?= $(CURDIR)/var
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON ?= $(CURDIR)/$(VPY)

.PHONY: venv demo test lint bench clean airflow-ui mlflow-ui

$(VENV)/.installed: requirements.txt constraints.txt
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q -r requirements.txt -c constraints.txt
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(VPY) -m thrnn.pipeline.demo $(DEMO_ARGS)

# The UIs of the demo: Airflow (login admin, password printed by `make demo`) and MLflow.
airflow-ui: venv
	AIRFLOW_HOME=$(THRNN_HOME)/airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False PYTHONPATH=$(CURDIR) \
	AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$(THRNN_HOME)/airflow/airflow.db \
	$(VENV)/bin/airflow standalone

mlflow-ui: venv
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(THRNN_HOME)/mlflow.db --port 5000

test: venv
	$(VPY) -m ruff check .
	$(VPY) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VPY) -m ruff check .

clean:
	rm -rf $(THRNN_HOME)
