# Developer tasks. Everything runs in .venv (python3 -m venv); nothing is installed globally.
# The package is built from this tree by pip (scikit-build-core, Cython, CMake and Ninja come
# from PyPI into pip's isolated build environment) and installed non-editable, so the tests
# import the installed build, compiled core included.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip

.PHONY: venv install test lint bench wheel demo clean

## venv: create or refresh .venv with the test dependencies ([dependency-groups] test)
venv:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --group test

## install: build justpipe with its compiled core and install it; a failed compile is an error
install: venv
	JUSTPIPE_REQUIRE_EXTENSIONS=1 $(PIP) install --force-reinstall --no-deps .
	$(PY) -m justpipe info

## test: lint, then the whole suite, every test once per core backend (compiled and pure)
test: install lint
	$(PY) -m pytest

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

## demo: install, then run the streaming demo
demo: install
	$(PY) examples/demo.py

clean:
	rm -rf $(VENV) build dist wheelhouse _skbuild .pytest_cache .hypothesis .benchmarks \
		.mypy_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
