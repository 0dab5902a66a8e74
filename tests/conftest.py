"""Suite-wide fixtures: every test runs once per `justpipe._core` backend.

The autouse `core_backend` fixture is parametrised as ``cython`` and ``python`` for every
test collected under tests/ and switches `justpipe._core` to that backend (`_core._use`), so
each test runs on the compiled core and on the pure twins. Tests marked `backend_agnostic`
run once, on whatever backend is active.

When the compiled core is not importable, its half is skipped, with the import error as the
reason; but under CI (``CI`` set) or with ``JUSTPIPE_REQUIRE_EXTENSIONS=1`` it fails instead,
so a build that silently tests only the pure twins cannot pass.

Options: ``--backend {both,cython,python}`` (default: both, or python when
``JUSTPIPE_NO_EXTENSIONS`` is set) and ``--run-slow`` (or ``JUSTPIPE_SLOW=1``) for tests
marked `slow`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import justpipe
import justpipe._core as core

# the real engines' session fixtures (Ray, Dask, executors), shared across modules, and
# the real PostgreSQL server's (tests/pg.py)
pytest_plugins = ["engines", "pg"]

BACKENDS = ("cython", "python")
REQUIRE_ENV = "JUSTPIPE_REQUIRE_EXTENSIONS"
SLOW_ENV = "JUSTPIPE_SLOW"
REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("justpipe")
    group.addoption(
        "--backend",
        choices=("both", *BACKENDS),
        default="python" if core.env_flag(core.NO_EXTENSIONS_ENV) else "both",
        help="which justpipe._core backend(s) to run every test on (default: both)",
    )
    group.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help=f"also run tests marked slow (or set {SLOW_ENV}=1)",
    )


def compiled_required() -> bool:
    """Whether a missing compiled core must fail the suite instead of skipping half of it."""
    return core.env_flag(REQUIRE_ENV) or core.env_flag("CI")


def backend_unavailable(name: str) -> None:
    """Skip (or, when the compiled core is required, fail) a test that needs backend `name`."""
    reason = f"justpipe._core backend {name!r} is not importable: {core.COMPILED_IMPORT_ERROR}"
    if compiled_required():
        pytest.fail(f"{reason} (and {REQUIRE_ENV}/CI demand it)", pytrace=False)
    pytest.skip(reason)


def selected_backends(config: pytest.Config) -> tuple[str, ...]:
    choice = str(config.getoption("--backend"))
    return BACKENDS if choice == "both" else (choice,)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "core_backend" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("backend_agnostic") is not None:
        return
    metafunc.parametrize(
        "core_backend",
        selected_backends(metafunc.config),
        indirect=True,
        # grouped per module: a module's tests run on one backend, then on the other, so
        # module-level state (fixtures, a timestamp taken at import) is not hours apart
        scope="module",
    )


@pytest.fixture(autouse=True, scope="session")
def core_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The `justpipe._core` backend this test runs on (made active for its duration)."""
    name: str = getattr(request, "param", core.BACKEND)
    if name not in core.AVAILABLE_BACKENDS:
        backend_unavailable(name)
    previous = core.BACKEND
    core._use(name)
    try:
        yield name
    finally:
        core._use(previous)


@pytest.fixture(autouse=True)
def no_storage_url_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """A JUSTPIPE_STORAGE_URL of the developer's shell would win over every test's
    JUSTPIPE_STORAGE_PATH: the tests that want one set it themselves."""
    monkeypatch.delenv("JUSTPIPE_STORAGE_URL", raising=False)


@pytest.fixture(scope="session")
def twins() -> tuple[SimpleNamespace, SimpleNamespace]:
    """Both backends' public names side by side, `(compiled, pure)`, for differential tests."""
    if "cython" not in core.AVAILABLE_BACKENDS:
        backend_unavailable("cython")
    return (
        SimpleNamespace(**core._namespace("cython")),
        SimpleNamespace(**core._namespace("python")),
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow") or core.env_flag(SLOW_ENV):
        return
    skip_slow = pytest.mark.skip(reason=f"slow: use --run-slow or {SLOW_ENV}=1")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip_slow)


def pytest_report_header(config: pytest.Config) -> list[str]:
    location = Path(justpipe.__file__).resolve().parent
    in_tree = REPO_ROOT / "src" in location.parents
    source = " (the source tree, not an installed build)" if in_tree else ""
    lines = [
        f"justpipe: {location}{source}",
        f"justpipe._core: active {core.BACKEND}, available {', '.join(core.AVAILABLE_BACKENDS)}; "
        f"testing on {', '.join(selected_backends(config))}"
        + ("; compiled required" if compiled_required() else ""),
    ]
    if core.COMPILED_IMPORT_ERROR is not None:
        lines.append(f"justpipe._core: compiled backend unavailable: {core.COMPILED_IMPORT_ERROR}")
    return lines
