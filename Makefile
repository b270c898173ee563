# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
AUDIT := tests/http_audit/node_modules/.installed
CLIENTS := tests/clients/node_modules/.installed
GRAPHIQL := server/static/graphiql
GRAPHIQL_NPM := server/graphiql/node_modules
DASHBOARD := server/static/dashboard
DASHBOARD_NPM := server/dashboard/node_modules

.PHONY: assets serve test test-fast test-newest lint format bench schema documents docs clean

# The runtime dependencies, for `make serve`; the dev extras on top, for `make test`. The dev
# stamp is older than a new runtime one, so a change to pyproject.toml redoes both.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --upgrade --upgrade-strategy eager -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	touch $(DEV_STAMP)

# The GraphQL-over-HTTP audit suite (npm: graphql-http) that the tests run.
$(AUDIT): tests/http_audit/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node.js and npm (for the graphql-http audit)"; exit 1; }
	npm ci --prefix tests/http_audit --no-audit --no-fund --loglevel=error
	touch $(AUDIT)

# The JavaScript clients the tests drive the service with (npm: Apollo Client, graphql-sse,
# graphql-ws).
$(CLIENTS): tests/clients/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node.js and npm (for the JavaScript client tests)"; exit 1; }
	npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error
	touch $(CLIENTS)

# GraphiQL's files, which the service serves itself (no CDN), pinned in
# server/graphiql/package-lock.json; and the frontend's documents, its example tabs.
$(GRAPHIQL)/.installed: server/graphiql/package-lock.json $(wildcard tests/queries/*.graphql)
	@command -v npm >/dev/null || { echo "GraphiQL's files come from npm: install Node.js and npm, then run make assets"; exit 1; }
	npm ci --prefix server/graphiql --no-audit --no-fund --loglevel=error
	cp $(GRAPHIQL_NPM)/react/umd/react.production.min.js \
		$(GRAPHIQL_NPM)/react-dom/umd/react-dom.production.min.js \
		$(GRAPHIQL_NPM)/graphiql/graphiql.min.js $(GRAPHIQL_NPM)/graphiql/graphiql.min.css $(GRAPHIQL)/
	cp $(GRAPHIQL_NPM)/@graphiql/plugin-explorer/dist/index.umd.js $(GRAPHIQL)/plugin-explorer.umd.js
	cp $(GRAPHIQL_NPM)/@graphiql/plugin-explorer/dist/style.css $(GRAPHIQL)/plugin-explorer.css
	rm -rf $(GRAPHIQL)/examples && mkdir $(GRAPHIQL)/examples
	cp tests/queries/*.graphql $(GRAPHIQL)/examples/
	touch $@

# The dashboard's libraries (Chart.js, graphql-ws), pinned in server/dashboard/package-lock.json,
# beside its own script and styles; its documents come from the trusted documents manifest.
$(DASHBOARD)/.installed: server/dashboard/package-lock.json
	@command -v npm >/dev/null || { echo "The dashboard's files come from npm: install Node.js and npm, then run make assets"; exit 1; }
	npm ci --prefix server/dashboard --no-audit --no-fund --loglevel=error
	cp $(DASHBOARD_NPM)/chart.js/dist/chart.umd.min.js $(DASHBOARD_NPM)/graphql-ws/umd/graphql-ws.min.js $(DASHBOARD)/
	touch $@

assets: $(GRAPHIQL)/.installed $(DASHBOARD)/.installed

serve: $(STAMP) assets
	$(BIN)/provgraph serve --dev

test: lint $(AUDIT) $(CLIENTS) assets
	$(BIN)/python -m pytest

# The in-process tier alone (tests/fast/): GraphQL documents against the schema, no server.
test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -m fast

# `make test` on the newest version of every dependency that its range in pyproject.toml
# allows (the install above upgrades them all, eagerly): CI runs this, so that a release
# within a range that breaks the project shows there, not on someone's fresh install.
test-newest:
	rm -f $(STAMP) $(DEV_STAMP)
	$(MAKE) test

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schema: $(STAMP)
	$(BIN)/provgraph schema > schema.graphql

# The trusted documents (PERSISTED_QUERIES=only): the frontend's, from tests/queries.
documents: $(STAMP)
	$(BIN)/provgraph documents > server/persisted-documents.json

# The configuration tables in README.md, from the Settings fields' groups and descriptions.
docs: $(STAMP)
	$(BIN)/provgraph settings --readme README.md

# Every benchmark runs, whatever an earlier one found; the target fails if any missed a bar.
BENCHMARKS := history graphql whole_history reports fanout load
bench: $(STAMP)
	@failed=""; for name in $(BENCHMARKS); do \
		echo "== bench.$$name"; $(BIN)/python -m bench.$$name || failed="$$failed $$name"; \
	done; test -z "$$failed" || { echo "missed a bar:$$failed"; exit 1; }

clean:
	rm -rf $(VENV) tests/clients/node_modules tests/http_audit/node_modules *.egg-info .pytest_cache .ruff_cache .hypothesis $(GRAPHIQL_NPM) $(GRAPHIQL)/.installed \
		$(DASHBOARD_NPM) $(DASHBOARD)/.installed $(DASHBOARD)/*.min.js
