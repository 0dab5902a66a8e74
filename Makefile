# Developer tasks. Everything runs in .venv (python3 -m venv); nothing is installed globally.
# The package is built from this tree by pip (scikit-build-core, Cython, CMake and Ninja come
# from PyPI into pip's isolated build environment) and installed non-editable, so the tests
# import the installed build, compiled core included.

PYTHON ?= python3
VENV ?= .venv
# dependency groups installed into the venv; the groups of optional extras' tests go here, as the
# main interpreter's run requires them (JUSTPIPE_EXTRAS_REQUIRED=1)
TEST_GROUPS ?= test test-extras
# the other Pythons we ship wheels for: `make test` runs the suite on each, in .venv-X.Y
OTHER_PYTHONS ?= 3.12 3.13
# what they run: the suite, both backends, without the heavy reliability variants, which the
# main interpreter runs (they test the kernel, which is the same Python code on every version)
OTHER_PYTEST_ARGS ?= --ignore=tests/reliability
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip

.PHONY: venv install browser postgres test test-other-pythons test-python lint bench wheel demo clean

## venv: create or refresh .venv with the test dependencies (the TEST_GROUPS dependency groups)
venv:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(addprefix --group ,$(TEST_GROUPS))

## install: build justpipe with its compiled core and install it; a failed compile is an error
install: venv
	JUSTPIPE_REQUIRE_EXTENSIONS=1 $(PIP) install --force-reinstall --no-deps .
	$(PY) -m justpipe info

## test: lint, then the whole suite, every test once per core backend (compiled and pure), with
## the optional extras required; then the suite on each of OTHER_PYTHONS (test-other-pythons)
test: install lint browser postgres
	JUSTPIPE_EXTRAS_REQUIRED=1 $(PY) -m pytest
	@$(MAKE) --no-print-directory test-other-pythons

## test-other-pythons: for each X.Y in OTHER_PYTHONS, find pythonX.Y (PATH, then pyenv's
## versions), build and install justpipe into .venv-X.Y and run the suite there on both backends.
## A Python that is not found is skipped with a message, but fails the run under CI (CI=true).
test-other-pythons:
	@for version in $(OTHER_PYTHONS); do \
	  if python="$$(.ci/find-python $$version)"; then \
	    echo "== Python $$version ($$python): build into .venv-$$version, then the suite"; \
	    $(MAKE) --no-print-directory test-python PYTHON="$$python" VENV=.venv-$$version \
	      TEST_GROUPS=test || exit 1; \
	  else \
	    case "$$(printf '%s' "$${CI:-}" | tr '[:upper:]' '[:lower:]')" in \
	      1|true|yes|on) \
	        echo "ERROR: Python $$version not found (python$$version on PATH, pyenv versions);" \
	          "CI must test every Python we ship wheels for" >&2; \
	        exit 1;; \
	      *) \
	        echo "*** SKIPPED: Python $$version not found (python$$version on PATH, pyenv" \
	          "versions); CI fails here ***";; \
	    esac; \
	  fi; \
	done

## test-python: build and install into $(VENV) with $(PYTHON), then the suite (OTHER_PYTEST_ARGS;
## tests of optional extras that are not installed are skipped)
test-python: install
	JUSTPIPE_EXTRAS_REQUIRED= $(PY) -m pytest $(OTHER_PYTEST_ARGS)

## browser: the headless Chromium the dashboard's browser tests drive (apt-get when root;
## otherwise a visible message, and those tests fail under the main run)
browser:
	scripts/install-browser

## postgres: the PostgreSQL server binaries the tests start their own server with (apt-get
## when root; otherwise a visible message, and the PostgreSQL tests fail under the main run)
postgres:
	scripts/install-postgres

## lint: ruff and mypy --strict over the package, the tests, the examples and the benchmarks
lint: venv
	$(PIP) install --quiet --group lint
	$(BIN)/ruff check src/justpipe tests examples bench
	$(BIN)/mypy --strict src/justpipe

## bench: the benchmarks in bench/ (compiled, pure and the raw-asyncio floor)
bench: install
	$(PY) -m pytest bench/ --benchmark-only
	$(PY) bench/report.py

## wheel: build the wheel for this platform into dist/
wheel: venv
	JUSTPIPE_REQUIRE_EXTENSIONS=1 $(PIP) wheel --no-deps --wheel-dir dist .

## demo: install (with the core test dependencies only: no engines or browser), then run the
## streaming demo
demo:
	@$(MAKE) --no-print-directory install TEST_GROUPS=test
	$(PY) examples/demo.py

clean:
	rm -rf $(VENV) .venv-3.* build dist wheelhouse _skbuild .pytest_cache .hypothesis .benchmarks \
		.mypy_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
