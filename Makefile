# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: run test install install-test bench lint clean apt-deps

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Runtime install, pinned by constraints.txt (the lock).
$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -c constraints.txt -e '.[test]'
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Debian packages the tests use: redis-server (a Redis with AOF that a test
# starts and kills itself). Installed only when missing.
apt-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (apt)"; \
	  (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null; }

run: install
	$(VENV)/bin/bridge run

test: install-test apt-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Benchmarks (not part of the tests): redis-server, and wrk as the load
# generator (bench.ingest falls back to a multi-process Python client).
bench: install apt-deps
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk (apt)"; \
	  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1 || true; }
	$(PY) -m bench.ingest
	$(PY) -m bench.sync

lint: install-test
	$(VENV)/bin/ruff check bridge channel_adapters crm_adapters mappings sandbox

clean:
	rm -rf $(VENV) var
