# segstream — the one entry point for humans and CI. `make` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WITH_INFRA := deploy/local/with-infra.sh
# mypyc build of the pure core (build_native.py; the module list is processors/native.py)
NATIVE := build/native/.stamp
NATIVE_SRC := build_native.py $(wildcard processors/*.py processors/lang/*.py) state/model.py \
              state/codec.py

.PHONY: help install native test test-unit test-integration test-faults lint fmt infra-up infra-down \
        infra-status bench-ingest bench-engine bench-stream bench-deliver lock schemas deploy-check demo clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# A failed compilation warns loudly and leaves the pure-Python modules in use (not retried
# until a source changes; `make native` retries and fails on error).
$(NATIVE): $(STAMP) $(NATIVE_SRC)
	$(PY) build_native.py
	@mkdir -p $(@D) && touch $@

install: $(STAMP) $(NATIVE) ## create .venv, install segstream and its pinned deps, mypyc-compile the core

native: $(STAMP) ## recompile the pure core with mypyc now (fails on a compile error)
	$(PY) build_native.py --strict
	@mkdir -p $(dir $(NATIVE)) && touch $(NATIVE)

test: $(STAMP) $(NATIVE) ## run the whole suite (starts Kafka and Redis when not running, stops them after)
	$(PY) -m pytest -q

test-unit: $(STAMP) $(NATIVE) ## only the fast tests of the pure core (no servers)
	$(PY) -m pytest -q tests/unit

test-integration: $(STAMP) $(NATIVE) ## only the tests on the real Kafka broker and Redis
	$(PY) -m pytest -q tests/integration

FAULTS_REPORT := .run/faults-report.jsonl
test-faults: $(STAMP) $(NATIVE) ## the fault-injection suite at scale: 200k events per scenario, figures printed
	@mkdir -p .run && rm -f $(FAULTS_REPORT)
	SEGSTREAM_FAULT_ALL=1 SEGSTREAM_FAULT_EVENTS=200000 SEGSTREAM_FAULT_KILLS=4 \
	SEGSTREAM_FAULT_REDIS_DOWN_S=30 \
	SEGSTREAM_FAULT_REPORT=$(FAULTS_REPORT) \
	$(PY) -m pytest -q -s -o timeout=1800 -m faults tests/integration
	@echo "figures and notes per scenario: $(FAULTS_REPORT)"

lint: $(STAMP) ## ruff (C901 bound 12) and mypy (strict on the whole package)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

fmt: $(STAMP) ## format and auto-fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

infra-up: ## start local Kafka (KRaft) and Redis (AOF on) on 127.0.0.1, in the background
	deploy/local/kafka.sh start
	SEGSTREAM_REDIS_PERSIST=aof deploy/local/redis.sh start

infra-down: ## stop the local Kafka and Redis that infra-up started
	-deploy/local/kafka.sh stop
	-deploy/local/redis.sh stop

infra-status: ## say whether local Kafka and Redis are running (infra-up's and the test session's)
	@deploy/local/kafka.sh status || true
	@deploy/local/redis.sh status || true
	@SEGSTREAM_KAFKA_DATA=.run/test-kafka deploy/local/kafka.sh status || true
	@SEGSTREAM_REDIS_DATA=.run/test-redis deploy/local/redis.sh status || true

lock: $(STAMP) ## regenerate deploy/compose/*requirements.lock (hash-pinned, for the Docker image) from pyproject.toml
	$(PY) deploy/compose/lock.py

schemas: $(STAMP) ## regenerate the published JSON Schema files from the models
	$(PY) -m stream.cli schemas export schemas/jsonschema

bench-ingest: $(STAMP) $(NATIVE) ## ingest throughput on the real broker: arrays, singles, plain-Faust baseline
	$(WITH_INFRA) $(PY) bench/bench_ingest.py

bench-stream: $(STAMP) $(NATIVE) ## worker throughput vs engine and naive Faust, latency, restart (real broker+Redis)
	$(WITH_INFRA) $(PY) bench/bench_stream.py

bench-deliver: $(STAMP) $(NATIVE) ## webhook deliveries/s of segstream deliver vs raw aiohttp POSTs (real broker)
	$(WITH_INFRA) $(PY) bench/bench_deliver.py

bench-engine: $(STAMP) $(NATIVE) ## offline engine throughput, latency and memory over >=1M generated events
	$(PY) bench/bench_engine.py --with processors/custom_segments.yaml \
	    --types processors/event_types.yaml --custom-share 0.05

deploy-check: $(STAMP) $(NATIVE) ## validate deploy/: compose, Kubernetes, Prometheus rules (promtool), dashboard
	$(PY) -m pytest -q tests/unit/test_deploy_*.py tests/integration/test_deploy.py

demo: $(STAMP) $(NATIVE) ## the whole pipeline live: Kafka, Redis, worker, collector, simulator, a live view
	$(WITH_INFRA) deploy/local/demo.sh

clean: ## remove the virtualenv, caches and the mypyc build (not the Kafka download cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build
	find processors state -name '*.so' -delete
	rm -f processors/native_manifest.json
