# Kafka Ingress — every target does its own set-up; a second run re-downloads nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP    := $(VENV)/.installed
KAFKA_LIBS  := .cache/kafka/libs
KAFKA_STAMP := .cache/kafka/.fetched
PYTEST_ARGS ?=

.PHONY: setup check test test-unit test-chaos dev bench soak clean

setup: $(PY_STAMP) $(KAFKA_STAMP)

$(PY_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

# Kafka broker jars from Maven Central, copied into a git-ignored cache folder.
$(KAFKA_STAMP): infra/kafka/pom.xml
	@command -v java >/dev/null || { echo "Java 17+ is required to run the Kafka broker" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required to fetch the Kafka broker jars" >&2; exit 1; }
	rm -rf $(KAFKA_LIBS)
	mvn --batch-mode --quiet -f infra/kafka/pom.xml dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS)
	@touch $@

check: $(PY_STAMP)
	$(BIN)/ruff check adapter handlers tests bench
	$(BIN)/ruff format --check adapter handlers tests bench
	$(BIN)/mypy

test: setup check
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(PY_STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

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
