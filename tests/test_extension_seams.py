"""Extensions reach the kernel through its named seams only (issue 19).

Durable runs, executors, observers, storage, the dashboard and the CLI may use what
`justpipe._kernel` (and the `justpipe._core` objects it hands out) offers publicly (the
run journal, the invoker's helpers, plans...), never a `_`-prefixed name of the kernel
(`_Invocation`, `orch._complete`, `publisher._factory`...), and never replace a kernel
object's method at run time (`orch.scheduler.complete = ...`). This test reads their
source (AST): every name imported from the kernel, every `_`-prefixed attribute used on
anything but their own `self`/`cls` and not defined by their own classes, and every
assignment to an attribute that names a kernel method (but not their own data).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import justpipe

pytestmark = pytest.mark.backend_agnostic

PACKAGE = Path(justpipe.__file__).resolve().parent
KERNEL = (*(PACKAGE / "_kernel").glob("*.py"), *(PACKAGE / "_core").glob("*_py.py"))
EXTENSIONS = ("durable", "executors", "observability", "storage", "dashboard", "cli")


def kernel_names() -> tuple[set[str], set[str]]:
    """The kernel's `_`-prefixed names (not dunders), and the names of its methods."""
    private: set[str] = set()
    methods: set[str] = set()
    for path in KERNEL:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = None
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = node.name
            elif isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Name):
                name = node.id
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value if node.value.isidentifier() else None  # (__slots__)
            if name and name.startswith("_") and not name.startswith("__"):
                private.add(name)
        for cls in ast.walk(ast.parse(path.read_text())):
            if isinstance(cls, ast.ClassDef):
                for item in cls.body:
                    is_method = isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                    if is_method and not item.name.startswith("__"):
                        methods.add(item.name)
    return private, methods


def extension_files() -> Iterator[Path]:
    for package in EXTENSIONS:
        yield from sorted((PACKAGE / package).rglob("*.py"))


def own_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """The attribute names the module's own classes define: all of them (methods, class
    attributes, `__slots__`, `self.x`), and those it assigns as data (`self.x = ...`, class
    attributes, `__slots__`): writing those on another object is setting its own data."""
    defined: set[str] = set()
    data: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    defined.add(item.name)
                for target in _targets(item):
                    if isinstance(target, ast.Name):
                        data.add(target.id)
                if isinstance(item, ast.Assign | ast.AnnAssign) and any(
                    isinstance(t, ast.Name) and t.id == "__slots__" for t in _targets(item)
                ):
                    for const in ast.walk(item):
                        if isinstance(const, ast.Constant) and isinstance(const.value, str):
                            data.add(const.value)
        elif isinstance(node, ast.Attribute) and _is_self(node.value):
            if isinstance(node.ctx, ast.Store):
                data.add(node.attr)
            defined.add(node.attr)
    return defined | data, data


def _targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return list(node.targets)
    if isinstance(node, ast.AnnAssign):
        return [node.target]
    return []


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def violations(path: Path, private: set[str], methods: set[str]) -> list[str]:
    """What module `path` does to the kernel that it must not (see the module)."""
    source = path.read_text()
    tree = ast.parse(source, str(path))
    mine, data = own_names(tree)
    found: list[str] = []

    def at(node: ast.AST, what: str) -> None:
        found.append(f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("justpipe._kernel"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    at(node, f"imports {alias.name} from {node.module}")
        elif isinstance(node, ast.Attribute) and not _is_self(node.value):
            attr = node.attr
            if attr in private and attr not in mine:
                at(node, f"touches the kernel's .{attr}")
            if isinstance(node.ctx, ast.Store) and attr in methods and attr not in data:
                at(node, f"replaces a kernel method: .{attr} = ...")
        elif _is_setattr(node):
            assert isinstance(node, ast.Call)
            name = node.args[1]
            if isinstance(name, ast.Constant) and name.value in methods | private:
                at(node, f"setattr(..., {name.value!r}, ...) on a kernel name")
    return found


def _is_setattr(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "setattr"
        and len(node.args) >= 2
    )


def test_extensions_use_only_the_kernels_named_seams() -> None:
    private, methods = kernel_names()
    assert {"_Invocation", "_complete", "_advance", "_pending", "_factory"} <= private
    assert {"complete", "complete_step", "schedule"} <= methods
    found = [v for path in extension_files() for v in violations(path, private, methods)]
    assert not found, "extensions reaching into the kernel:\n" + "\n".join(found)


def test_the_check_finds_what_it_forbids(tmp_path: Path) -> None:
    """The checks above can fail: the patches issue 19 removed are all found."""
    private, methods = kernel_names()
    bad = tmp_path / "durable" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(
        "from justpipe._kernel.context import _Invocation\n"
        "from justpipe._kernel.runner import _PipelineRunner\n"
        "def attach(runner, orch):\n"
        "    orch.scheduler.complete = lambda u: []\n"
        "    orch._complete = print\n"
        "    runner.publisher._factory.seed(3)\n"
        "    orch._pending.append(None)\n"
        "    orch._advance(None)\n"
        "    setattr(orch, 'complete_step', print)\n"
    )
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path
    try:
        found = violations(bad, private, methods)
    finally:
        PACKAGE = saved
    text = "\n".join(found)
    for what in (
        "imports _Invocation",
        "imports _PipelineRunner",
        "replaces a kernel method: .complete =",
        "._complete",
        "._factory",
        "._pending",
        "._advance",
        "setattr(..., 'complete_step'",
    ):
        assert what in text, f"{what!r} not found in:\n{text}"
