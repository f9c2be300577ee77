"""The size rules of the style guide, kept by a test: no function or method of geoseg over 60 lines (``def`` to
its last line, docstring included), no module over 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "geoseg"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 600

# Functions known to be over the limit, being split on another branch. This list must only shrink: empty it as
# those splits land, and never add to it.
KNOWN_LONG: set[str] = set()


def lengths_in(tree: ast.AST, module: str) -> dict[str, int]:
    """``module::qualified.name`` -> lines, for every function and method (nested ones included) of ``tree``."""
    out: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{module}::{prefix}{child.name}"
                out[name] = max(out.get(name, 0), (child.end_lineno or child.lineno) - child.lineno + 1)
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(tree, "")
    return out


def function_lengths() -> dict[str, int]:
    """:func:`lengths_in` over every module of geoseg (paths relative to the package)."""
    out: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        out.update(lengths_in(ast.parse(path.read_text(encoding="utf-8")), path.relative_to(PACKAGE).as_posix()))
    return out


def test_lengths_count_def_to_last_line_with_qualified_names() -> None:
    body = "".join(f"        x{i} = {i}\n" for i in range(59))
    source = f"class A:\n    @staticmethod\n    def f():\n{body}        def g():\n            return 1\n"
    assert lengths_in(ast.parse(source), "m.py") == {"m.py::A.f": 62, "m.py::A.f.g": 2}


def test_the_walk_sees_the_package() -> None:
    lengths = function_lengths()
    assert "infer.py::infer" in lengths and "predict.py::Predictor.predict" in lengths, sorted(lengths)[:20]


def test_no_function_over_60_lines() -> None:
    long = {name: n for name, n in function_lengths().items() if n > MAX_FUNCTION_LINES and name not in KNOWN_LONG}
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): {long}"


def test_the_known_long_list_is_not_stale() -> None:
    lengths = function_lengths()
    gone = {name for name in KNOWN_LONG if name not in lengths}
    short = {name: lengths[name] for name in KNOWN_LONG - gone if lengths[name] <= MAX_FUNCTION_LINES}
    assert not gone and not short, f"remove from KNOWN_LONG (renamed, removed or now short): {gone or ''} {short}"


def test_no_module_over_600_lines() -> None:
    long = {path.relative_to(PACKAGE).as_posix(): n for path in sorted(PACKAGE.rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (one concept per module): {long}"
