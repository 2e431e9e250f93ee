# Two commands: `make run` (a node on the embedded default) and `make test` (everything CI runs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := chromium redis-server

.PHONY: run test lint typecheck unit e2e bench bench-forwarding system-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

run: $(STAMP)
	$(BIN)/sfu serve

# System packages the tests drive for real: Debian's chromium (browser peer), redis-server,
# prometheus (its promtool validates deploy/prometheus) and nodejs (node:test runs the JS
# client's clock-sync and cluster suites).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check sfu signalling bench tests

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: that is a failure of the suite, not a pass.
test: system-deps $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

bench-forwarding: $(STAMP)
	$(BIN)/python -m bench forwarding

# The standard scenario set in simulated time (each with recovery on and off), then the
# real-time forwarding cost. A few minutes on a 2-core machine; results in bench-results/.
bench: $(STAMP)
	$(BIN)/python -m bench run-scenarios --out bench-results
	$(BIN)/python -m bench forwarding --out bench-results/forwarding.json

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
