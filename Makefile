# Baton — the manual is the list of verbs: `make help`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST := $(BIN)/pytest
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help demo test lint typecheck schemas tools observability unit integration deps kafka ferretdb deploy soak bench clean

help: ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/baton: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Baton needs Python 3.11+, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

deps: $(BIN)/baton ## create .venv and install Baton with its dev tools

kafka: ## fetch Apache Kafka jars from Maven Central into ~/.cache/baton (once)
	@scripts/ensure-tools.sh
	@scripts/fetch-kafka.sh >/dev/null

ferretdb: ## build FerretDB (MongoDB wire protocol on SQLite) from the Go module proxy into ~/.cache/baton (once)
	@scripts/ensure-tools.sh
	@scripts/fetch-ferretdb.sh >/dev/null

demo: deps ## run Baton's main job on the embedded bus (no Kafka, no MongoDB)
	$(BIN)/baton demo

lint: deps ## ruff lint and format check
	$(BIN)/ruff check libs services tests deploy examples
	$(BIN)/ruff format --check libs services tests deploy examples

typecheck: deps ## mypy --strict
	$(BIN)/mypy

schemas: deps ## schema compatibility gate (every new version BACKWARD compatible)
	$(BIN)/baton schemas check

tools: deps ## declaration gate: every pinned tool registered, at its version, compatible with tools.lock.json
	$(BIN)/baton tools check
	@# The example's own pack too (its MCP server is started to list its tools; the HTTP secret is only checked for presence).
	cd examples/invoices && PATH="$(abspath $(BIN)):$$PATH" PYTHONPATH=. ACME_PO_TOKEN=declaration-check baton tools check --workflows workflows

OBS := deploy/observability
observability: deps ## alert rules (promtool check + unit tests), Prometheus config, the dashboard against Grafana's model
	@# promtool comes from Debian's prometheus package (installed as root, as in CI); elsewhere its checks are skipped.
	@scripts/ensure-tools.sh promtool || [ -z "$$CI" ]
	@if command -v promtool >/dev/null 2>&1; then \
	  promtool check rules $(OBS)/prometheus/alerts.yml && \
	  promtool check config $(OBS)/prometheus/prometheus.yml && \
	  (cd $(OBS)/prometheus && promtool test rules alerts.test.yml); \
	else echo "promtool missing: alert rule checks skipped (scripts/ensure-tools.sh promtool as root installs it)"; fi
	scripts/check-grafana-dashboard.sh $(OBS)/grafana/dashboards/*.json

unit: deps ## fast tests: unit and component, embedded bus only
	@# The approval page's browser test needs chromium: installed as root (CI); elsewhere that test skips without it.
	@scripts/ensure-tools.sh chromium || [ -z "$$CI" ]
	$(PYTEST) -m "not integration and not e2e"

integration: deps kafka ferretdb ## tests on real Kafka and FerretDB (started and stopped by the tests)
	$(PYTEST) -m "integration or e2e"

test: lint typecheck schemas tools observability unit integration ## everything CI runs

soak: deps ## memory soak: RSS of the supervisor, the validator and the auditor at 10,000 and 100,000 workflows -> reports/memory.txt
	@mkdir -p reports
	$(BIN)/baton soak supervisor --workflows 100000 --report-at 10000,100000 | tee reports/memory.txt
	$(BIN)/baton soak handoff-validator --workflows 100000 --report-at 10000,100000 | tee -a reports/memory.txt
	$(BIN)/baton soak auditor --workflows 100000 --report-at 10000,100000 | tee -a reports/memory.txt

$(VENV)/.bench-extra: pyproject.toml $(BIN)/baton
	$(BIN)/pip install -q -e '.[dev,bench]'
	@touch $@

bench: deps kafka ferretdb $(VENV)/.bench-extra ## starts Kafka + FerretDB, every figure against a baseline run alongside -> bench/report.md (BENCH_ARGS=--quick: small sizes)
	$(BIN)/baton bench --out bench $(BENCH_ARGS)

deploy: deps ## regenerate docker-compose.yml and deploy/k8s from the workflow declarations
	$(BIN)/python deploy/generate.py

clean: ## remove the virtual environment and caches (keeps the Kafka jar cache)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
