# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
export THRNN_HOME ?= $(CURDIR)/var
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON ?= $(CURDIR)/$(VPY)

.PHONY: venv demo test lint bench clean

$(VENV)/.installed: requirements.txt constraints.txt
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q -r requirements.txt -c constraints.txt
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(VPY) -m jobs.demo

test: venv
	$(VPY) -m ruff check .
	$(VPY) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VPY) -m ruff check .

clean:
	rm -rf $(THRNN_HOME)
