# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: run test install install-test bench lint security typecheck sbom fuzz clean apt-deps

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
# starts and kills itself) and chromium (the browser tests drive it with
# Playwright; Playwright never downloads a browser here). Installed only when
# missing. openssl signs the custom channel's README example. dovecot-imapd
# is the real IMAP server the e-mail channel's tests start with a config of
# their own (tests/support/dovecot.py); checked by the IMAP binary the
# package itself ships (/usr/sbin/dovecot is dovecot-core's, off a
# non-root PATH).
APT_PACKAGES := redis-server:redis-server chromium:chromium openssl:openssl \
	/usr/lib/dovecot/imap:dovecot-imapd
apt-deps:
	@missing=""; for pair in $(APT_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing (apt)"; \
	  (apt-get update -qq && apt-get install -y -qq $$missing fonts-dejavu-core) >/dev/null; fi

run: install
	$(VENV)/bin/bridge run

# Three pytest-xdist workers on 2 cores: the real-stack and browser files
# spend much of their time waiting on their own processes (gunicorn, RQ,
# the sandboxes, Chromium), so a third worker fills the cores (17 min 46 s
# to 19 min 46 s of pytest on 2 cores with 3, both databases, as the machine
# is loaded). A file stays on one worker, so its
# module fixtures are built once; TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 3
test: install-test apt-deps security typecheck
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# Static security gate: bandit must report no high-severity finding and ruff's
# security rules (flake8-bandit) none at all in the product code.
SRC := bridge channel_adapters crm_adapters mappings sandbox
security: install-test
	$(VENV)/bin/bandit -q -r $(SRC) -lll
	$(VENV)/bin/ruff check --select S --ignore S101,S311 $(SRC)

# Static types: mypy over the product code as pyproject's [tool.mypy] says
# (strict on bridge/ and the two adapter contracts, an unused `# type: ignore`
# an error everywhere). Any error fails the build before a test runs; its
# cache (.mypy_cache) keeps a re-run to a second or two.
typecheck: install-test
	$(VENV)/bin/mypy

# A CycloneDX SBOM of the pinned environment (constraints.txt is the lock).
sbom: install
	$(PIP) install -c constraints.txt -e '.[sbom]'
	$(VENV)/bin/cyclonedx-py environment $(PY) --of JSON -o sbom.cdx.json
	@echo "wrote sbom.cdx.json"

# Coverage-guided fuzzing of the parsers (atheris), FUZZ_SECONDS each.
FUZZ_SECONDS ?= 60
fuzz: install-test
	$(PIP) install -c constraints.txt -e '.[fuzz]'
	$(PY) -m tests.fuzz --seconds $(FUZZ_SECONDS)

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
