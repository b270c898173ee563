# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
AUDIT := tests/http_audit/node_modules/.installed

.PHONY: serve test test-fast test-newest lint format bench schema clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	touch $(STAMP)

# The GraphQL-over-HTTP audit suite (npm: graphql-http) that the tests run.
$(AUDIT): tests/http_audit/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node.js and npm (for the graphql-http audit)"; exit 1; }
	npm ci --prefix tests/http_audit --no-audit --no-fund --loglevel=error
	touch $(AUDIT)

serve: $(STAMP)
	$(BIN)/provgraph serve --dev

test: lint $(AUDIT)
	$(BIN)/python -m pytest

# The in-process tier alone (tests/fast/): GraphQL documents against the schema, no server.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m fast

# `make test` on the newest version of every dependency that its range in pyproject.toml
# allows (the install above upgrades them all, eagerly): CI runs this, so that a release
# within a range that breaks the project shows there, not on someone's fresh install.
test-newest:
	rm -f $(STAMP)
	$(MAKE) test

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schema: $(STAMP)
	$(BIN)/provgraph schema > schema.graphql

bench: $(STAMP)
	$(BIN)/python -m bench.history
	$(BIN)/python -m bench.graphql
	$(BIN)/python -m bench.reports
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.load

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .hypothesis
