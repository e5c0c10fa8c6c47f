# The two commands a newcomer needs: `make run` (the demo) and `make test` (lint and tests).
# Each creates .venv and installs requirements.txt when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements
# The independent OAuth server of tests/test_oidc_provider_e2e.py (Node; pinned by its lock
# file), installed by `make test` when npm is there (without it those tests skip, or fail in CI).
# Defined before `test`, whose prerequisites make expands as it reads the rule.
OIDC_STAMP := tests/oidc_provider/node_modules/.installed

.PHONY: run test lint format loadtest loadtest-long loadtest-capacity bench bench-scale demo-check fuzz venv clean oidc-provider

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) scripts/run_demo.py

test: $(STAMP) $(OIDC_STAMP) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

$(OIDC_STAMP): tests/oidc_provider/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix tests/oidc_provider --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "make: npm not found, so the oidc-provider tests will skip"; fi

oidc-provider: $(OIDC_STAMP)

# A bounded (~20 s) Locust smoke run against a throwaway local stack under gunicorn.
loadtest: $(STAMP)
	$(PY) -m loadtest.stack smoke

# The longer documented profiles: mid-run key rotation, distributed workers, a longer soak.
loadtest-long: $(STAMP)
	$(PY) -m loadtest.stack rotation
	$(PY) -m loadtest.stack distributed
	$(PY) -m loadtest.stack long

# The capacity finder: verifications/s per path (opaque, cached opaque, JWT, caller chain) before
# p95 or failures break the limits; table + chart in reports/capacity/. A few minutes.
loadtest-capacity: $(STAMP)
	$(PY) -m loadtest.capacity

# The one benchmark: verifier cost, receiver and issuer throughput, and the cost of token
# reuse, measured in one run, printed as one table and written to bench-results.md.
bench: $(STAMP)
	$(PY) scripts/bench.py

# Does the issuer cost the same with 10k, 100k and 1M tokens behind it? One table, growth
# factor per decade (a few minutes; `$(PY) scripts/bench_scale.py --quick` skips 1M).
bench-scale: $(STAMP)
	$(PY) scripts/bench_scale.py

# The demo without waiting for Ctrl-C: exits 0 only if both calls succeeded.
demo-check: $(STAMP)
	$(PY) scripts/run_demo.py --once

# A longer, random bad-input hunt than the suite's deterministic one.
fuzz: $(STAMP)
	M2M_FUZZ_RANDOM=1 M2M_FUZZ_EXAMPLES=2000 $(PY) -m pytest tests/test_faults_bad_input.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache reports test-artifacts
