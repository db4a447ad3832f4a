# llamaproxy — `make run` sets up everything and serves; `make test` sets up and runs the suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FRONTEND_STAMP := frontend/dist/.built
PYTEST_ARGS ?=

.PHONY: setup test-setup venv frontend llama-server migrate run demo test lint format bench clean

setup: venv frontend llama-server migrate

# What the test suite needs beyond `make run`: whisper-server (audio tests) and Debian's
# Chromium (dashboard end-to-end tests; Playwright never downloads a browser of its own).
test-setup: setup
	$(BIN)/python manage.py install_llama_server --whisper
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The dashboard is built only when its sources changed (npm ci reads package-lock.json).
frontend:
	@if [ -f frontend/package.json ]; then $(MAKE) --no-print-directory $(FRONTEND_STAMP); fi

$(FRONTEND_STAMP): $(shell find frontend -path frontend/node_modules -prune -o -path frontend/dist -prune -o -type f -print 2>/dev/null)
	cd frontend && npm ci --no-audit --no-fund && npm run build
	touch $(FRONTEND_STAMP)

llama-server: venv
	$(BIN)/python manage.py install_llama_server

migrate: venv
	$(BIN)/python manage.py migrate --noinput

run: setup
	$(BIN)/python manage.py serve

# A newcomer's first look: a tiny random-weight model in ./models, then serve.
demo: setup
	mkdir -p models
	test -f models/tiny-chat.gguf || $(BIN)/python manage.py make_tiny_model models/tiny-chat.gguf --name tiny-chat
	$(BIN)/python manage.py scan_models
	$(BIN)/python manage.py serve

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: test-setup
	$(BIN)/ruff check .
	cd frontend && npx vitest run && npm run --silent typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) frontend/node_modules frontend/dist
