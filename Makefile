# Two commands matter: `make run` (serve the API) and `make test` (every check and test).
# Both bootstrap from nothing but Python 3.11 and pip.

PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
BIN := .venv/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# The browser the admin page's tests drive (Debian's package; Playwright downloads nothing).
CHROMIUM := /usr/bin/chromium

.PHONY: run test bench bench-serving bench-structured soak install install-runtime lint format migrate clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

install-runtime: $(UV)
	$(UV) sync --locked --no-default-groups --inexact

install: $(UV)
	$(UV) sync --locked

run: install-runtime
	$(BIN)/python -m app migrate
	$(BIN)/python -m app create-admin
	$(BIN)/python -m app serve --host $(HOST) --port $(PORT)

migrate: install-runtime
	$(BIN)/python -m app migrate

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict app

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint $(CHROMIUM)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Installed once, as root on Debian/Ubuntu (CI); elsewhere a note: the browser tests then
# skip, or fail when CI is set.
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "note: $(CHROMIUM) is missing; install Debian's chromium package to run tests/web"; \
	fi

# Long runs stay out of `make test`: gateway overhead vs direct and vs LiteLLM, streams,
# memory, structured output on a real model, serving (workers, servers, settings propagation);
# writes benchmarks/RESULTS.md (~12 minutes).
bench: install
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Mixed traffic at 100 clients for 60 s against the stand-in, then health-check p99s with and
# without hostile JSON schemas; writes benchmarks/SOAK.md (~3 minutes). `make test` runs a
# 12 s variant (tests/soak) that asserts the invariants only.
soak: install
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

# The serving section alone (~5 minutes): 1 vs 2 workers, uvicorn vs Granian, on a private
# PostgreSQL, and settings propagation between processes; writes benchmarks/out/serving.json.
bench-serving: install
	$(BIN)/python -m benchmarks serving

# Structured output from valid to right alone (~6 minutes): the labelled set on SmolLM2-135M
# and Gemma 3 270M, ours vs instructor vs naive json_object; writes benchmarks/out/structured_accuracy.json.
bench-structured: install
	$(BIN)/python -m benchmarks structured

clean:
	rm -rf $(TOOLS) .venv .mypy_cache .ruff_cache .pytest_cache .bench
