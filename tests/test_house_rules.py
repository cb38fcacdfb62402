"""The house rules of shared/ARCHITECTURE.md, checked on the package's source rather
than by review: no function over 80 lines; no ``_private`` name imported from another
module; no reach into another class's ``_attributes``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rasteret"
MAX_FUNCTION_LINES = 80
#: Underscored names that are public API by convention (namedtuple's methods).
PUBLIC_UNDERSCORED = {"_replace", "_asdict", "_fields", "_make"}
#: Private attributes of other libraries read on purpose, each with its reason.
ALLOWED_REACHES = {
    # The standard library has no public way to ask whether its fork server runs or
    # what it preloads; rasteret.torch starts it early with its imports preloaded.
    ("rasteret/torch/forkserver.py", "_forkserver"),
}


def sources() -> list[Path]:
    """Every module of the package."""
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in PUBLIC_UNDERSCORED


def code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines from its ``def`` to its end, less its docstring (a public
    function documents every argument; that is not length of code)."""
    lines = (node.end_lineno or node.lineno) - node.lineno + 1
    first = node.body[0]
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        lines -= (first.end_lineno or first.lineno) - first.lineno + 1
    return lines


def long_functions(tree: ast.AST) -> Iterator[str]:
    """``name (N lines)`` of each function longer than the limit."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = code_lines(node)
            if lines > MAX_FUNCTION_LINES:
                yield f"{node.name} ({lines} lines)"


def private_imports(tree: ast.AST) -> Iterator[str]:
    """``module._name`` of each private name imported from another module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for alias in node.names:
                if _private(alias.name):
                    yield f"{'.' * node.level}{node.module or ''}.{alias.name}"


class _Reaches(ast.NodeVisitor):
    """Attribute accesses ``x._name`` where ``x`` is not ``self``/``cls`` of a class
    that itself sets ``self._name`` (another instance of the same class is fine)."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.own: list[set[str]] = []

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        own = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
               and isinstance(n.value, ast.Name) and n.value.id in ("self", "cls")}
        own |= {t.id for n in node.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                if isinstance(t, ast.Name)}
        own |= {n.name for n in node.body
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        self.own.append(own)
        self.generic_visit(node)
        self.own.pop()

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _private(node.attr):
            mine = self.own and node.attr in self.own[-1]
            if not mine:
                self.found.append(f"line {node.lineno}: .{node.attr}")
        self.generic_visit(node)


def private_reaches(tree: ast.AST, module: str = "") -> list[str]:
    """Where ``tree`` (the source of ``module``) touches another object's private
    attribute, less :data:`ALLOWED_REACHES`."""
    visitor = _Reaches()
    visitor.visit(tree)
    return [found for found in visitor.found
            if (module, found.rsplit(".", 1)[1]) not in ALLOWED_REACHES]


def violations(rule) -> dict[str, list[str]]:
    """``{module: [what breaks the rule]}`` over the package."""
    found = {}
    for path in sources():
        tree = ast.parse(path.read_text(), str(path))
        broken = list(rule(tree, _name(path)) if rule is private_reaches else rule(tree))
        if broken:
            found[_name(path)] = broken
    return found


@pytest.mark.parametrize("rule", [long_functions, private_imports, private_reaches],
                         ids=lambda rule: rule.__name__)
def test_the_package_keeps_the_house_rule(rule):
    assert violations(rule) == {}


def test_the_checks_find_what_they_look_for():
    tree = ast.parse(
        "from other import _hidden, shown\n"
        "def long():\n    \"\"\"Doc.\"\"\"\n" + "    x = 1\n" * 80 +
        "class Box:\n"
        "    def __init__(self):\n        self._mine = 1\n"
        "    def same(self, other):\n        return other._mine + self._mine\n"
        "def reach(box):\n    return box._theirs + box.shown + box._replace()\n")
    assert list(long_functions(tree)) == ["long (81 lines)"]
    assert list(private_imports(tree)) == ["other._hidden"]
    assert [r.split(": ")[1] for r in private_reaches(tree)] == ["._theirs"]


def test_no_test_folder_takes_the_name_of_a_dependency():
    """pytest puts tests/ on sys.path; a folder there named like a package the tests
    import (``tests/torch``) becomes that package, as a namespace, wherever the real one
    is not installed (the 3.11 core venv has no torch), and ``importorskip`` passes."""
    tests = Path(__file__).resolve().parent
    locked = set()
    for lock in (tests.parent / "locks").glob("py3*-*.txt"):
        locked |= {line.split("==")[0].strip().lower().replace("-", "_")
                   for line in lock.read_text().splitlines()
                   if line and line[0].isalnum() and "==" in line}
    locked |= {"torch", "torchgeo", "lightning", "dask", "distributed"}
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert not folders & locked, folders & locked
