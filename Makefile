# smap-bench: two commands, `make up` (the main job) and `make test`.
# Everything else is a convenience around .venv/bin/smap-bench.

VENV ?= .venv
SB   := $(VENV)/bin/smap-bench
PY   := $(VENV)/bin/python

.PHONY: up down status test lint typecheck unit integration notebooks bootstrap

## up: install what is missing, start the whole local stack, print where everything is
up: bootstrap
	$(SB) up

## down: stop what `make up` started, and only that
down:
	@if [ -x $(SB) ]; then $(SB) down; else echo "nothing to stop (no $(VENV))"; fi

## status: every service, its URL and whether it is healthy
status:
	$(SB) status

## test: lint, type-check and the whole suite against the real services (started if needed)
test: bootstrap
	$(SB) up --no-replay
	$(MAKE) lint typecheck
	$(VENV)/bin/pytest tests notebooks --nbval-lax -p no:cacheprovider

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

unit: bootstrap
	$(VENV)/bin/pytest tests/unit

bootstrap:
	@bash scripts/bootstrap.sh
