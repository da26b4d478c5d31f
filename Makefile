# rankflow — `make help` lists the targets. Everything runs from the repository root.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV          := $(CURDIR)/.venv
PY            := $(VENV)/bin/python
UV_VERSION    := 0.13.9
export RANKFLOW_HOME ?= $(CURDIR)/.rankflow
export RANKFLOW_ROOT := $(CURDIR)
# `make cluster-up` writes this: the Spark steps then run on a local standalone cluster and the
# lake is on S3 (it sets the variables below before their defaults); `make cluster-down` removes
# it. The tests set up their own cluster where they need one.
ifeq ($(filter test test-fast chaos mutation,$(MAKECMDGOALS)),)
-include $(RANKFLOW_HOME)/cluster.mk
endif
export AIRFLOW_HOME ?= $(RANKFLOW_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION := False
export AIRFLOW__LOGGING__LOGGING_LEVEL ?= WARNING
# The embedded defaults: Spark in local mode, a local S3 endpoint that accepts any key pair.
export AIRFLOW_CONN_SPARK_RANKFLOW ?= {"conn_type": "spark", "host": "local[*]"}
# `make up` also runs a local Spark Connect server (Delta enabled) here; the demo's steps attach
# to its warm JVM instead of paying a cold spark-submit each (see README, "Spark Connect").
export RANKFLOW_SPARK_CONNECT ?= sc://127.0.0.1:15002
# the demo's steps attach to the Connect server of RANKFLOW_SPARK_CONNECT (`make up`'s, or the
# cluster's after `make cluster-up`); with none, they run on the spark_rankflow connection
CONNECT_CONN := {"conn_type": "spark_connect", "host": "sc://127.0.0.1", "port": $(lastword $(subst :, ,$(RANKFLOW_SPARK_CONNECT)))}
DEMO_SPARK_CONN := $(if $(RANKFLOW_SPARK_CONNECT),$(CONNECT_CONN),$(AIRFLOW_CONN_SPARK_RANKFLOW))
export AWS_ACCESS_KEY_ID ?= rankflow-local
export AWS_SECRET_ACCESS_KEY ?= rankflow-local
export AWS_DEFAULT_REGION ?= us-east-1
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)/dags
export PATH := $(VENV)/bin:$(PATH)
export PYSPARK_PYTHON := $(PY)
# The local Redis's ACL users (writer, reader, admin; docs/security.md): random passwords made
# once under $(RANKFLOW_HOME) and exported to every target, unless RANKFLOW_REDIS_URL names
# another server.
LOCAL_SECRETS := $(RANKFLOW_HOME)/local-secrets.mk
ifeq ($(origin RANKFLOW_REDIS_URL),undefined)
ifneq ($(filter-out help clean down,$(or $(MAKECMDGOALS),help)),)
-include $(LOCAL_SECRETS)
endif
endif
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(RANKFLOW_HOME)/stamps
LOGS := $(RANKFLOW_HOME)/logs

.PHONY: help setup up down demo serve test chaos test-fast mutation lint secrets-baseline audit format typecheck check airflow screenshot bench bench-realtime bench-materialise bench-nightly bench-stream bench-engines cluster-up cluster-down kafka-up kafka-down lock clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --compile-bytecode: every job, Airflow task and CLI call is a new Python process; without
# .pyc files each one compiles its imports again (with PYTHONDONTWRITEBYTECODE=1, as on CI's
# machines, Python never writes them), so all of site-packages is compiled once here
# (`import great_expectations` 8.7 s -> 4.0 s, the tiny nightly DAG 186 s -> 136 s)
$(VENV)/.installed: requirements.txt requirements.lock pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip --upgrade >/dev/null
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --python $(PY) --compile-bytecode -r requirements.txt -c requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

# rebuilt (variables added, passwords kept) when the module that knows the variables changes
$(LOCAL_SECRETS): include/rankflow/ops/local_secrets.py | $(VENV)/.installed
	@$(PY) -m rankflow.cli services secrets

$(STAMP)/redis-server:
	@mkdir -p $(STAMP)
	@command -v redis-server >/dev/null || { echo "installing redis-server from Debian's packages"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server redis-tools >/dev/null; }
	@touch $@

# make airflow's metadata database; `make up` starts it under $(RANKFLOW_HOME)/run/postgres
$(STAMP)/postgresql:
	@mkdir -p $(STAMP)
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { echo "installing postgresql from Debian's packages"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql >/dev/null; }
	@touch $@

$(STAMP)/chromium:
	@mkdir -p $(STAMP)
	@command -v chromium >/dev/null || { echo "installing chromium from Debian's packages (Ranking page tests)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }
	@touch $@

$(STAMP)/wrk:
	@mkdir -p $(STAMP)
	@command -v wrk >/dev/null || { echo "installing wrk from Debian's packages (make bench-realtime)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }
	@touch $@

# Ivy's resolution chatter goes to a log; VERBOSE=1 shows it
$(STAMP)/spark: $(VENV)/.installed
	@mkdir -p $(STAMP) $(LOGS)
	@echo "fetching Delta Lake's jars into the Ivy cache and checking Spark (log: $(LOGS)/warm-spark.log)"
	@if [ "$(VERBOSE)" = 1 ]; then $(PY) -m rankflow.cli warm-spark 2>&1 | tee $(LOGS)/warm-spark.log; \
	  else $(PY) -m rankflow.cli warm-spark > $(LOGS)/warm-spark.log 2>&1 || { tail -n 40 $(LOGS)/warm-spark.log; exit 1; }; fi
	@grep "Delta round trip" $(LOGS)/warm-spark.log
	@touch $@

$(STAMP)/airflow-db: $(VENV)/.installed
	@mkdir -p $(STAMP) $(AIRFLOW_HOME)
	$(VENV)/bin/airflow db migrate >/dev/null
	@touch $@

# the local caller's key of the ranking service (the first of RANKFLOW_API_KEYS)
$(RANKFLOW_HOME)/api-key: $(LOCAL_SECRETS)
	@$(PY) -m rankflow.cli services secrets

setup: $(VENV)/.installed $(STAMP)/redis-server $(STAMP)/spark $(STAMP)/airflow-db $(RANKFLOW_HOME)/api-key ## Install what is missing: venv, redis-server, Delta jars, Airflow DB

up: $(VENV)/.installed $(STAMP)/redis-server $(STAMP)/postgresql ## Start the local Redis, S3 endpoint, Spark Connect and Postgres servers
	$(PY) -m rankflow.cli services up

down: ## Stop the local services (and the Kafka broker of `make kafka-up`)
	@test -x $(PY) && $(PY) -m rankflow.cli services down || true
	@test -x $(PY) && $(PY) -m rankflow.cli kafka down || true

demo: setup up ## Generate the demo marketplace and run the nightly DAG once, end to end
	AIRFLOW_CONN_SPARK_RANKFLOW='$(DEMO_SPARK_CONN)' $(PY) -m rankflow.cli demo

serve: setup up ## Run the ranking service on 127.0.0.1:8800 (POST /v1/rank; key in .rankflow/api-key)
	$(PY) -m rankflow.cli serve $(ARGS)

test: setup up kafka-up $(STAMP)/chromium ## Run every test (unit, Spark, services, DAG, UI, end-to-end); ARGS="tests/ui -k lookup" narrows it
	$(PY) -m pytest $(ARGS)

chaos: setup up ## Kill Redis and the publish steps at seeded points (RANKFLOW_CHAOS_SEED, _KILLS)
	$(PY) -m pytest -m chaos -s

test-fast: setup up kafka-up ## Run the tests that take seconds (no Spark, no end-to-end)
	$(PY) -m pytest -m "not spark and not slow"

lint: $(VENV)/.installed ## Lint, formatting (ruff), the library's layers (import-linter), secrets (detect-secrets)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd include && $(VENV)/bin/lint-imports --cache-dir ../.import_linter_cache ../pyproject.toml
	git ls-files -z | xargs -0 $(VENV)/bin/detect-secrets-hook --baseline .secrets.baseline

secrets-baseline: $(VENV)/.installed ## Re-scan after an audited false positive moved (then review the diff)
	$(VENV)/bin/detect-secrets scan --baseline .secrets.baseline

audit: $(VENV)/.installed ## Known vulnerabilities of the locked packages (pip-audit; needs PyPI's JSON API)
	$(VENV)/bin/pip-audit -r requirements.lock --no-deps --disable-pip --strict --progress-spinner off

mutation: $(VENV)/.installed ## Mutation testing of the deciding modules (mutmut): SCOPE=deciding|ci, MIN_SCORE=0.9 fails below
	$(PY) tests/mutation.py --scope $(or $(SCOPE),deciding) $(if $(MIN_SCORE),--min-score $(MIN_SCORE))

format: $(VENV)/.installed ## Format the code (ruff)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(VENV)/.installed ## Type-check the library (mypy --strict)
	$(VENV)/bin/mypy

check: lint typecheck test ## Everything CI runs

# The local Postgres (RANKFLOW_POSTGRES_URL, exported from the local secrets) is Airflow's
# metadata DB; the shell expands it, so the password is in no command line and never echoed.
# psycopg2 is the pinned driver; no async one is installed, so Airflow's async engine (only the
# "wait for a DAG run" endpoint uses it) stays off.
AIRFLOW_DB := AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$${RANKFLOW_POSTGRES_URL/postgresql:/postgresql+psycopg2:}" AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=
AIRFLOW_LOCAL := AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:8080/execution/
airflow: setup up ## Start Airflow (scheduler, API server on http://127.0.0.1:8080, triggerer) on the local Postgres
	@test -n "$$RANKFLOW_POSTGRES_URL" || { echo "RANKFLOW_POSTGRES_URL is not set (see $(LOCAL_SECRETS))"; exit 1; }
	@echo "migrating Airflow's metadata database (Postgres on 127.0.0.1)"
	@$(AIRFLOW_DB) $(VENV)/bin/airflow db migrate >/dev/null
	$(AIRFLOW_DB) $(AIRFLOW_LOCAL) $(VENV)/bin/airflow standalone

screenshot: setup up $(STAMP)/chromium ## Screenshot the Ranking page of the current data into docs/ranking-page.png
	$(PY) tests/ui/screenshot.py --out docs/ranking-page.png --height 2900 $(if $(RANKING_USER),--user $(RANKING_USER))

cluster-up: setup up ## Start a Spark standalone master and 2 workers on 127.0.0.1 (UI :8090) and put the lake on s3a://; later targets run there
	$(PY) -m rankflow.cli cluster up

cluster-down: ## Stop the local Spark cluster; targets run on local Spark and the local lake again
	$(PY) -m rankflow.cli cluster down

kafka-up: setup ## Start a single-node Kafka broker (KRaft) on 127.0.0.1:9092 from Maven Central's jars, with the event topic
	$(PY) -m rankflow.cli kafka up

kafka-down: ## Stop the local Kafka broker
	$(PY) -m rankflow.cli kafka down

bench: setup up ## Benchmark scoring and publishing (BENCH_USERS, BENCH_CANDIDATES)
	$(PY) bench/bench_score_publish.py

bench-realtime: setup up $(STAMP)/wrk ## Benchmark the ranking service (latency, rate, Redis round trips) and materialisation; after `make demo` (ARGS="--help")
	$(PY) bench/bench_realtime.py $(ARGS)

bench-materialise: setup up ## Benchmark materialise_features at scale (the demo's feature day scaled up; ARGS="--users N --items N"); after `make demo`
	$(PY) bench/bench_materialise.py $(ARGS)

bench-nightly: setup up ## The nightly DAG at marketplace scale, per step (USERS=100k|300k|1m or a list; ARGS="--report-only"); docs/scale.md
	$(PY) bench/bench_nightly.py --users $(or $(USERS),100k) $(ARGS)

bench-stream: setup up ## The stream updater: events/s per process and event-to-feature p50/p99 on Redis Streams and Kafka (make kafka-up first for Kafka)
	$(PY) bench/bench_stream.py $(ARGS)

bench-engines: setup up ## The local and spark training engines on the demo's rows: NDCG@10 and IPW NDCG@10 differences, rerun bytes, seconds (PRESET=demo)
	$(PY) bench/bench_engines.py --preset $(or $(PRESET),demo) $(ARGS)

lock: $(VENV)/.installed ## Re-resolve requirements.lock from requirements.txt
	$(VENV)/bin/uv pip compile requirements.txt --universal --python-version 3.11 -o requirements.lock

clean: down ## Remove generated data, services' state and caches (keeps .venv)
	rm -rf $(RANKFLOW_HOME) .pytest_cache .mypy_cache .ruff_cache
