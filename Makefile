# Gatherly — the two commands that matter: `make up` and `make test`.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
export UV_COMPILE_BYTECODE := 1
PORT ?= 8000
DATA_DIR ?= ./var

.PHONY: up test install uv lint format typecheck imports pytest bench bench-http clean docs openapi catalog contract-long

up: install ## install everything and start Gatherly with demo data at http://localhost:8000
	$(UV) run gatherly up --port $(PORT) --data-dir $(DATA_DIR)

test: install lint typecheck imports pytest ## the whole suite: lint, types, import contracts, tests

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

pytest:
	$(UV) run pytest -q

docs: install ## regenerate docs/openapi.json, the reference in docs/api.md and docs/events.md (tests fail when they drift)
	$(UV) run gatherly docs

openapi catalog: docs

contract-long: install ## the Schemathesis contract run for longer (CONTRACT_SECONDS per run, default 600)
	GATHERLY_CONTRACT_SECONDS=$${CONTRACT_SECONDS:-600} GATHERLY_CONTRACT_EXAMPLES=$${CONTRACT_EXAMPLES:-1000} \
		$(UV) run pytest -q -p no:cacheprovider tests/contract --timeout=0

bench: install ## benchmarks; reports land in bench/reports/
	$(UV) run python bench/log_latency.py
	$(UV) run python bench/loop_stall.py
	$(UV) run python bench/image_processing.py

bench-http: install ## wrk against a seeded `gatherly up`: each endpoint beside /livez; report in bench/reports/http.md
	bash scripts/wrk.sh
	$(UV) run python bench/http_bench.py $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
