# Gatherly — the two commands that matter: `make up` and `make test`.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
export UV_COMPILE_BYTECODE := 1
PORT ?= 8000
DATA_DIR ?= ./var

.PHONY: up test install uv lint format typecheck imports pytest bench bench-distributed bench-http clean docs openapi catalog contract-long \
	web web-client web-check chromium deploy-check stack-deps stack-up up-distributed down-distributed \
	status-distributed test-distributed

up: install web ## install everything, build the web app and start Gatherly with demo data at http://localhost:8000
	$(UV) run gatherly up --port $(PORT) --data-dir $(DATA_DIR)

GATEWAY_PORT ?= 8080

stack-deps: ## install what `gatherly stack up` needs: PostgreSQL+PostGIS, Kafka, Connect + Debezium, SeaweedFS, nginx
	bash scripts/postgres.sh
	bash scripts/kafka.sh
	bash scripts/debezium.sh
	bash scripts/seaweedfs.sh
	bash scripts/nginx.sh

stack-up: install web stack-deps ## the distributed stack on this machine at http://localhost:8080; Ctrl-C stops it
	$(UV) run gatherly stack up --port $(GATEWAY_PORT) --data-dir $(DATA_DIR)/stack

up-distributed: install web stack-deps ## the distributed stack in the background at http://localhost:$(GATEWAY_PORT); returns once ready
	$(UV) run gatherly stack up --detach --port $(GATEWAY_PORT) --data-dir $(DATA_DIR)/stack

down-distributed: ## stop everything `make up-distributed` started
	$(UV) run gatherly stack down --data-dir $(DATA_DIR)/stack

status-distributed: ## each part of the distributed stack: up or down, pid and port
	$(UV) run gatherly stack status --data-dir $(DATA_DIR)/stack

test-distributed: install web stack-deps ## the API tests (tests/api) against a detached stack started for the run
	GATHERLY_TEST_TARGET=stack $(UV) run pytest -q tests/api -k stack

test: install web web-check chromium lint typecheck imports deploy-check pytest ## the whole suite: lint, types, the web app's checks, the deployment checks, tests

uv:
	@command -v uv >/dev/null 2>&1 || test -x "$(HOME)/.local/bin/uv" || \
		python3 -m pip install --user --quiet uv || python3 -m pip install --user --quiet --break-system-packages uv

install: uv
	$(UV) sync --all-packages --frozen

lint:
	$(UV) run ruff check .
	$(UV) run ruff format --check .

format:
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

typecheck:
	$(UV) run mypy

imports:
	$(UV) run lint-imports

# The API tests run in-process on each database backend and once against the distributed stack (tests/conftest.py).
pytest: stack-deps
	GATHERLY_TEST_TARGET=$${GATHERLY_TEST_TARGET:-in-process,stack} $(UV) run pytest -q

docs: install ## regenerate docs/openapi.json, the reference in docs/api.md and docs/events.md (tests fail when they drift)
	$(UV) run gatherly docs
	$(MAKE) web-client

# The web app (web/): npm ci from the lockfile (the npm cache makes a second install cheap), built by vite only
# when a source changed, so a second `make up` does not rebuild.
WEB_SOURCES := $(shell find web/src web/public -type f 2>/dev/null) web/index.html web/vite.config.ts \
	web/tsconfig.json web/package.json
WEB_CLIENT := web/src/api/schema.d.ts

web/node_modules/.installed: web/package-lock.json
	bash scripts/node.sh
	cd web && npm ci --prefer-offline --no-audit --no-fund
	touch $@

web/dist/index.html: web/node_modules/.installed $(WEB_SOURCES)
	cd web && npx vite build
	touch $@

web: web/dist/index.html ## build the web app into web/dist (served at / by gatherly up)

web-client: web/node_modules/.installed ## regenerate the typed API client from docs/openapi.json
	cd web && npx openapi-typescript ../docs/openapi.json -o src/api/schema.d.ts

web-check: web/node_modules/.installed ## the client matches docs/openapi.json, then tsc --noEmit and eslint
	cd web && npx openapi-typescript ../docs/openapi.json -o node_modules/.schema-check.d.ts >/dev/null 2>&1
	@diff -q $(WEB_CLIENT) web/node_modules/.schema-check.d.ts >/dev/null || \
		{ echo "$(WEB_CLIENT) drifted from docs/openapi.json: run make web-client"; exit 1; }
	cd web && npx tsc --noEmit
	cd web && npx eslint --max-warnings 0 src

deploy-check: install ## render the Kubernetes overlays, validate them (kubeconform), lint Dockerfile and workflows, checkov (scripts/deploy-check.sh)
	UV=$(UV) bash scripts/deploy-check.sh

chromium: ## Debian's Chromium for the browser tests (Playwright drives it; no browser download)
	bash scripts/chromium.sh

openapi catalog: docs

contract-long: install ## the Schemathesis contract run for longer (CONTRACT_SECONDS per run, default 600)
	GATHERLY_CONTRACT_SECONDS=$${CONTRACT_SECONDS:-600} GATHERLY_CONTRACT_EXAMPLES=$${CONTRACT_EXAMPLES:-1000} \
		$(UV) run pytest -q -p no:cacheprovider tests/contract --timeout=0

bench: install ## benchmarks; reports land in bench/reports/
	$(UV) run python bench/log_latency.py
	$(UV) run python bench/loop_stall.py
	$(UV) run python bench/image_processing.py

bench-distributed: install ## issue #17's benchmarks on PostgreSQL + Kafka (+ Debezium): they start what they need
	bash scripts/postgres.sh
	bash scripts/kafka.sh
	bash scripts/debezium.sh
	$(UV) run python bench/distributed_latency.py
	$(UV) run python bench/kafka_throughput.py
	$(UV) run python bench/nearby_search.py --database postgresql --events 1000000 --report bench/reports/nearby_search_postgis_1m.md

bench-http: install ## wrk against a seeded `gatherly up`: each endpoint in turns with /livez (alternating slices); report in bench/reports/http.md
	bash scripts/wrk.sh
	$(UV) run python bench/http_bench.py $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache web/dist
