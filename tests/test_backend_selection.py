"""How `justpipe._core` picks its backend, seen from fresh interpreters, and `_use()`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import justpipe
from conftest import backend_unavailable
from justpipe import _core

pytestmark = pytest.mark.backend_agnostic

PRINT_BACKEND = "import justpipe._core as c; print(c.BACKEND)"


def run_python(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run this interpreter in a clean process with `env` on top of a scrubbed environment."""
    clean = {k: v for k, v in os.environ.items() if k != _core.NO_EXTENSIONS_ENV}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env={**clean, **env}, timeout=60
    )


@pytest.mark.parametrize("value", ["1", "true", "YES", "On"])
def test_no_extensions_env_selects_the_pure_backend(value: str) -> None:
    result = run_python("-c", PRINT_BACKEND, JUSTPIPE_NO_EXTENSIONS=value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "python"


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_a_falsy_no_extensions_env_keeps_the_default(value: str) -> None:
    result = run_python("-c", PRINT_BACKEND, JUSTPIPE_NO_EXTENSIONS=value)
    assert result.stdout.strip() == _core.AVAILABLE_BACKENDS[0]


def test_compiled_backend_is_the_default_when_it_is_installed() -> None:
    if "cython" not in _core.AVAILABLE_BACKENDS:
        backend_unavailable("cython")
    result = run_python("-c", PRINT_BACKEND)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cython"


def test_info_command_reports_the_backends() -> None:
    result = run_python("-m", "justpipe", "info")
    assert result.returncode == 0, result.stderr
    assert f"backend: {_core.AVAILABLE_BACKENDS[0]}" in result.stdout
    assert f"available backends: {', '.join(_core.AVAILABLE_BACKENDS)}" in result.stdout
    assert f"justpipe {justpipe.__version__}" in result.stdout
    assert f"python: {sys.implementation.name.replace('cpython', 'CPython')}" in result.stdout


def test_info_command_follows_the_no_extensions_env() -> None:
    result = run_python("-m", "justpipe", "info", JUSTPIPE_NO_EXTENSIONS="1")
    assert "backend: python" in result.stdout.splitlines()


INFO_IMPORTS = """
import runpy, sys
import justpipe
before = set(sys.modules)
sys.argv = ["justpipe", "info"]
try:
    runpy.run_module("justpipe", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
new = set(sys.modules) - before
print(sorted(m for m in new if m.split(".")[0] in ("justpipe", "click", "rich")))
"""


def test_info_command_imports_nothing_beyond_the_package_and_its_core() -> None:
    result = run_python("-c", INFO_IMPORTS)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.splitlines()[-1]
    assert loaded == "[]"


@pytest.mark.parametrize("argv", [[], ["bogus"], ["info", "extra"]])
def test_unknown_command_prints_usage_and_exits_2(argv: list[str]) -> None:
    result = run_python("-m", "justpipe", *argv)
    assert result.returncode == 2
    assert "usage: python -m justpipe info" in result.stderr


def test_use_switches_every_exported_name() -> None:
    previous = _core.BACKEND
    try:
        for name in _core.AVAILABLE_BACKENDS:
            _core._use(name)
            assert name == _core.BACKEND
            namespace = _core._namespace(name)
            for export, value in namespace.items():
                assert getattr(_core, export) is value
    finally:
        _core._use(previous)


def test_use_rejects_an_unknown_backend() -> None:
    with pytest.raises(ValueError, match="not available"):
        _core._use("rust")
    assert _core.BACKEND in _core.AVAILABLE_BACKENDS


def test_twins_export_the_same_names() -> None:
    namespaces = [_core._namespace(name) for name in _core.AVAILABLE_BACKENDS]
    assert all(ns.keys() == namespaces[0].keys() for ns in namespaces)
    assert {
        "JoinTable",
        "Readiness",
        "InvocationIds",
        "AttemptCounter",
        "EventFactory",
    } <= set(namespaces[0])
