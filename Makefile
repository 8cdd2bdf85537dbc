# Kafka Ingress — every target does its own set-up; a second run re-downloads nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP    := $(VENV)/.installed
KAFKA_LIBS  := .cache/kafka/libs
KAFKA_STAMP := .cache/kafka/.fetched
# Restate's own CLI, for the compatibility test (tests/e2e/test_restate_cli.py)
RESTATE_CLI_VERSION := 1.7
RESTATE_CLI_DIR     := .cache/restate-cli
RESTATE_CLI_STAMP   := $(RESTATE_CLI_DIR)/.installed
PYTEST_ARGS ?=
# Hashed pins: the runtime set (the container image) and runtime + dev (make setup, CI).
LOCK     := requirements.lock
DEV_LOCK := requirements-dev.lock
# e.g. AUDIT_ARGS="-s osv" to ask OSV instead of PyPI's advisory data
AUDIT_ARGS ?=
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --all-build-deps --no-emit-find-links

CHROMIUM_HINT := the dashboard's browser tests need Debian's chromium: run make test as root (it installs it) or 'sudo apt-get install -y chromium'

.PHONY: setup restate-cli chromium check test test-unit test-chaos dev bench bench-peers soak clean lock audit promises

setup: $(PY_STAMP) $(KAFKA_STAMP)

# Exactly the locked versions, each checked against its hash; then the project itself with no
# dependency resolution (and its build backend from the lock, not from the network).
$(PY_STAMP): pyproject.toml $(DEV_LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# Re-resolve both lock files from pyproject.toml (newest versions its bounds allow); the
# runtime lock is constrained to the dev lock's versions so both agree.
lock:
	@test -x $(BIN)/pip-compile || { echo "run make setup first (pip-compile comes with it)" >&2; exit 1; }
	$(PIP_COMPILE) --upgrade --extra dev -o $(DEV_LOCK) pyproject.toml
	$(PIP_COMPILE) --upgrade -c $(DEV_LOCK) -o $(LOCK) pyproject.toml

# Known vulnerabilities (PyPI's advisory data) in every locked package. The verdict per lock
# file is one of: checked and clean, VULNERABLE, or NOT CHECKED when the advisory data could
# not be fetched for every package -- never "no known vulnerabilities" for a package that was
# not looked up. Anything but clean fails the target.
audit: $(PY_STAMP)
	@status=0; for lock in $(LOCK) $(DEV_LOCK); do \
		echo "pip-audit: $$lock"; \
		out=$$($(BIN)/pip-audit --strict --progress-spinner off --disable-pip --require-hashes \
			$(AUDIT_ARGS) -r $$lock 2>&1); code=$$?; echo "$$out"; \
		if [ $$code -eq 0 ]; then \
			echo "make audit: $$lock: every package checked, no known vulnerabilities"; \
		elif echo "$$out" | grep -qE "Found [0-9]+ known vulnerabilit"; then \
			echo "make audit: $$lock: VULNERABLE -- see the table above" >&2; status=1; \
		else \
			echo "make audit: $$lock: NOT CHECKED -- the vulnerability data could not be" \
				"fetched for every package (offline, or the index has no advisory API)" >&2; \
			[ $$status -eq 1 ] || status=2; \
		fi; \
	done; exit $$status

# Kafka broker jars from Maven Central, copied into a git-ignored cache folder.
$(KAFKA_STAMP): infra/kafka/pom.xml
	@command -v java >/dev/null || { echo "Java 17+ is required to run the Kafka broker" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required to fetch the Kafka broker jars" >&2; exit 1; }
	rm -rf $(KAFKA_LIBS)
	mvn --batch-mode --quiet -f infra/kafka/pom.xml dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS)
	@touch $@

# Restate's CLI from npm: the package and its prebuilt binary for this platform (an optional
# dependency, also from npm), in a git-ignored cache folder. No install script runs, so nothing
# else is fetched and the package's install analytics (@scarf/scarf) never report.
restate-cli: $(RESTATE_CLI_STAMP)

$(RESTATE_CLI_STAMP):
	@command -v npm >/dev/null || { echo "npm (Node.js) is required for the Restate CLI test" >&2; exit 1; }
	@npm view @restatedev/restate@$(RESTATE_CLI_VERSION) version >/dev/null
	rm -rf $(RESTATE_CLI_DIR)
	npm install --prefix $(RESTATE_CLI_DIR) --no-audit --no-fund --ignore-scripts \
		@restatedev/restate@$(RESTATE_CLI_VERSION)
	$(RESTATE_CLI_DIR)/node_modules/.bin/restate --version
	@touch $@

# Debian's chromium for the dashboard's browser tests (Playwright drives it; it never downloads
# a browser of its own). Installed here when missing and running as root, otherwise a clear stop.
chromium:
	@command -v chromium >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update && apt-get install -y chromium; \
	else \
		echo "$(CHROMIUM_HINT)" >&2; exit 1; \
	fi

check: $(PY_STAMP)
	$(BIN)/ruff check adapter handlers tests bench
	$(BIN)/ruff format --check adapter handlers tests bench
	$(BIN)/mypy

test: setup chromium $(RESTATE_CLI_STAMP) check
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(PY_STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# Regenerate docs/promises.md (doc anchors -> tests) after adding an anchor or a marker.
promises: $(PY_STAMP)
	$(BIN)/python -m tests.promises --write

# The chaos suite alone, with another seed: make test-chaos CHAOS_SEED=7
test-chaos: setup
	CHAOS_SEED=$${CHAOS_SEED:-1} $(BIN)/pytest tests/reliability -m reliability -s $(PYTEST_ARGS)

# Not in CI: SOAK_MINUTES (default 30) of steady traffic and kills, leak watch.
soak: setup
	$(BIN)/pytest tests/reliability/test_soak.py -m soak -s $(PYTEST_ARGS)

dev: setup
	$(BIN)/kafka-ingress dev $(DEV_ARGS)

bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Not in CI, not in `make test`: the same workload through Restate's own Kafka ingress (server
# from npm, Python SDK from PyPI, both pinned with hashes under bench/peers/, installed into
# .cache/peers/), beside our poller, in one run. docs/benchmarks.md, "Restate in the same run".
PEERS_DIR   := .cache/peers
PEERS_STAMP := $(PEERS_DIR)/.installed
PEERS_ARGS  ?=

bench-peers: setup $(PEERS_STAMP)
	$(BIN)/python -m bench.restate_peer --peers-dir $(PEERS_DIR) $(PEERS_ARGS)

$(PEERS_STAMP): bench/peers/package.json bench/peers/package-lock.json bench/peers/requirements.txt
	@command -v npm >/dev/null || { echo "npm (Node.js) is required for make bench-peers" >&2; exit 1; }
	rm -rf $(PEERS_DIR)
	mkdir -p $(PEERS_DIR)/npm
	cp bench/peers/package.json bench/peers/package-lock.json $(PEERS_DIR)/npm/
	cd $(PEERS_DIR)/npm && npm ci --ignore-scripts --no-audit --no-fund
	$(PYTHON) -m venv $(PEERS_DIR)/venv
	$(PEERS_DIR)/venv/bin/python -m pip install --quiet --disable-pip-version-check \
		--require-hashes -r bench/peers/requirements.txt
	@touch $@
