# `make demo` runs the sidecar against a local Secrets Manager emulator.
# `make test` runs lint, types and the whole test suite.
# `make bench` runs the benchmarks and rewrites docs/benchmarks.md (not part of `make test`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test lint typecheck pytest system-deps examples-deps bench bench-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tools.demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) system-deps examples-deps
	$(BIN)/pytest

# Tools from Debian's packages that some tests call (promtool).
system-deps:
	sh tools/install-system-deps.sh

# TypeScript for the test of the Node.js example, pinned by its package-lock.json.
# Without npm that test is skipped with a message saying so.
NODE_EXAMPLE := examples/node
examples-deps:
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "npm not found: the tests of the Node.js example will be skipped" >&2; \
	elif [ ! -e $(NODE_EXAMPLE)/node_modules/.package-lock.json ] || \
		[ $(NODE_EXAMPLE)/package-lock.json -nt $(NODE_EXAMPLE)/node_modules/.package-lock.json ]; then \
		npm ci --prefix $(NODE_EXAMPLE) --no-audit --no-fund; \
	fi

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# wrk and nginx from Debian's packages, for the benchmarks only.
bench-deps:
	sh bench/install-deps.sh

# BENCH_ARGS passes options, for example BENCH_ARGS=--quick.
bench: $(BENCH_STAMP) bench-deps
	BENCH_COMMAND="make bench$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')" $(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .pytest_cache .ruff_cache
	rm -rf $(NODE_EXAMPLE)/node_modules $(NODE_EXAMPLE)/dist
