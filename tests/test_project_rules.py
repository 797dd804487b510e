"""Rules of the code base that a reviewer would otherwise have to remember (docs/architecture.md).

Which package may import which is checked by import-linter (`make test`); these are the rules
it cannot express: no private name crosses a module boundary, functions stay short, and module
names do not repeat for different things.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "training", "service", "cli", "bench")
#: Longest function outside tests (typer command declarations excepted: their options are
#: the signature, one per line).
MAX_FUNCTION_LINES = 80


def _modules(*roots: str) -> Iterator[tuple[Path, ast.Module]]:
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _ours(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in (*PACKAGES, "tests")


def private_imports(path: Path, tree: ast.Module) -> Iterator[str]:
    """`from ours import _x`, and `module._x` on a module of ours imported here."""
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _ours(node.module):
            for alias in node.names:
                if _private(alias.name):
                    yield f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name}"
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if _ours(a.name))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            yield f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}"


def test_no_private_name_crosses_a_module_boundary() -> None:
    found = [
        hit for path, tree in _modules(*PACKAGES, "tests") for hit in private_imports(path, tree)
    ]
    assert not found, "\n".join(found)


def _is_command(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A typer command declaration: its parameters are typer options and arguments."""
    return "typer.Option" in ast.unparse(function.args) or "Option" in ast.unparse(function.args)


def test_functions_outside_tests_are_short() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines"
        for path, tree in _modules(*PACKAGES)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (lines := node.end_lineno - node.lineno + 1) >= MAX_FUNCTION_LINES
        and not _is_command(node)
    ]
    assert not long, "\n".join(long)


@pytest.mark.parametrize("example", ["from service.x import _y", "import service.x as m\nm._y"])
def test_the_private_name_rule_catches(example: str) -> None:
    path = ROOT / "example.py"
    assert list(private_imports(path, ast.parse(example)))


def test_module_names_do_not_repeat() -> None:
    """Two modules (or a module and a package) of one name would be two things to a reader."""
    names = Counter(
        path.stem
        for root in PACKAGES
        for path in (ROOT / root).rglob("*.py")
        if path.stem not in ("__init__", "__main__")
    )
    packages = {
        path.name for root in PACKAGES for path in (ROOT / root).rglob("*") if path.is_dir()
    }
    repeated = sorted(name for name, count in names.items() if count > 1)
    shadowing = sorted((names.keys() & (packages | set(PACKAGES))) - {"routers"})
    assert not repeated and not shadowing, (
        f"repeated: {repeated}; named like a package: {shadowing}"
    )


def test_every_room_is_in_the_layers_contract_and_the_architecture_page() -> None:
    """A new room of `service` gets its place in the layering and on the page, on purpose."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (rooms_contract,) = [c for c in config["contracts"] if c.get("containers") == ["service"]]
    layered = {name.strip() for layer in rooms_contract["layers"] for name in layer.split("|")}
    rooms = {
        path.stem if path.is_file() else path.name
        for path in (ROOT / "service").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert rooms == layered, f"in service/ but not layered: {sorted(rooms - layered)}"
    missing = sorted(
        room for room in rooms if f"`{room}`" not in page and f"service/{room}/" not in page
    )
    assert not missing, f"not on docs/architecture.md: {missing}"


def _calls(node: ast.AST, *names: str) -> Iterator[ast.Call]:
    """Calls in `node` to `x.name(...)` or `name(...)` for each of `names`."""
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            function = call.func
            called = function.attr if isinstance(function, ast.Attribute) else None
            called = called or (function.id if isinstance(function, ast.Name) else None)
            if called in names:
                yield call


def test_tests_wait_on_conditions_never_for_fixed_times_nor_assert_durations() -> None:
    """A sleep used to synchronise and a bound on a duration are races on a shared machine:
    tests wait on a condition (tests/waiting.py, the one poll) and leave speed to bench/."""
    found = []
    for path, tree in _modules("tests"):
        where = path.relative_to(ROOT)
        if where.as_posix() != "tests/waiting.py":
            found += [f"{where}:{c.lineno} sleeps" for c in _calls(tree, "sleep")]
        for node in ast.walk(tree):
            if isinstance(node, ast.Assert):
                clocks = list(_calls(node, "monotonic", "perf_counter"))
                found += [f"{where}:{node.lineno} asserts a duration" for _ in clocks[:1]]
    assert not found, "\n".join(found)
