# The two commands a newcomer needs: `make run` and `make test`. Both build .venv when it is
# missing or older than pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NGINX := $(VENV)/nginx/usr/sbin/nginx
CHROMIUM := /usr/bin/chromium

.PHONY: run test lint format bench bench-quick soak clean up down

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@echo "Setting up $(VENV): installing the dependencies from PyPI (first run only, about 20-60 s)..."
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)
	@echo "$(VENV) is ready."

run: $(STAMP)
	AUTH_DEV=$${AUTH_DEV:-1} exec $(PY) -m services

# The load-balancer tests drive Debian's nginx, unpacked into the venv: no root, no system service.
# Where it cannot be fetched they are skipped with the reason (and fail under CI=true).
$(NGINX): | $(STAMP)
	@echo "Unpacking Debian's nginx into $(VENV)/nginx for the load-balancer tests (once, a few seconds)..."
	@mkdir -p $(VENV)/nginx/deb
	@cd $(VENV)/nginx/deb && { apt-get download nginx >/dev/null 2>&1 \
	    || { [ "$$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 && apt-get download nginx >/dev/null 2>&1; }; } \
	  && dpkg -x nginx_*.deb .. && rm -rf ../deb \
	  || echo "note: Debian's nginx could not be fetched; the load-balancer tests will say so"

# The browser tests (tests/e2e) drive Debian's Chromium through Playwright's Python driver (its own
# browser download cannot work here). As root it is installed once with apt-get; where it cannot be,
# they are skipped with the reason (and fail under CI=true).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's chromium for the browser tests (apt-get; this takes a minute)"; \
	  { apt-get update -qq >/dev/null 2>&1 \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; } \
	  || echo "note: chromium could not be installed; the browser tests will say so"; \
	else echo "note: $(CHROMIUM) is missing and installing it needs root; the browser tests will say so"; fi

test: $(STAMP) $(NGINX) $(CHROMIUM)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Thousands of sockets through renewals, logouts, reconnects and garbage; not part of `make test`.
# SOAK_SOCKETS (2000), SOAK_SECONDS (60), SOAK_USERS (20) size it.
soak: $(STAMP)
	$(PY) -m tests.soak.run

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache

# The benchmark (docs/performance.md). Its extra packages (the Django Channels peer, matplotlib) and
# the Node peer's packages (exact versions from its package-lock.json) are installed by these targets
# only, into the venv, never by make test.
BENCH_STAMP := $(VENV)/.bench-installed
NODE_PEER := tests/bench/peers/node
NODE_MODULES := $(VENV)/bench-node/node_modules

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	@echo "Installing the bench extra into $(VENV) (Django Channels, uvicorn, matplotlib; once)..."
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

$(NODE_MODULES)/.package-lock.json: $(NODE_PEER)/package.json $(NODE_PEER)/package-lock.json | $(STAMP)
	@echo "Installing the Node peer's ws + jsonwebtoken into $(VENV)/bench-node (npm ci; once)..."
	@mkdir -p $(VENV)/bench-node
	@cp $(NODE_PEER)/package.json $(NODE_PEER)/package-lock.json $(VENV)/bench-node/
	@cd $(VENV)/bench-node && npm ci --no-audit --no-fund --loglevel=error >/dev/null \
	  || echo "note: npm ci failed; the bench reports the Node peer as not measured"

bench: $(BENCH_STAMP) $(NODE_MODULES)/.package-lock.json
	$(PY) -m tests.bench
	$(PY) -m tests.bench.history

bench-quick: $(BENCH_STAMP) $(NODE_MODULES)/.package-lock.json
	$(PY) -m tests.bench --quick

# The scaled-out stack (docker-compose.yml); needs Docker with Compose v2.
COMPOSE_CHECK = docker compose version >/dev/null 2>&1 || { \
	echo "make $@ needs Docker Engine with the Compose v2 plugin ('docker compose')."; \
	echo "Install Docker Engine and the docker-compose-plugin package, start the daemon, then retry."; \
	exit 1; }

up:
	@$(COMPOSE_CHECK)
	docker compose up -d --build

down:
	@$(COMPOSE_CHECK)
	docker compose down
