# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
AUDIT := tests/http_audit/node_modules/.installed

.PHONY: serve test lint format bench schema clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The GraphQL-over-HTTP audit suite (npm: graphql-http) that the tests run.
$(AUDIT): tests/http_audit/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node.js and npm (for the graphql-http audit)"; exit 1; }
	npm ci --prefix tests/http_audit --no-audit --no-fund --loglevel=error
	touch $(AUDIT)

serve: $(STAMP)
	$(BIN)/provgraph serve --dev

test: $(STAMP) $(AUDIT)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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
