"""Every output file name has one owner (``stformer._constants``): no other module spells it."""

import ast
from pathlib import Path

import stformer._constants as names

SOURCE = Path(names.__file__).parent
OWNED = [value for key, value in vars(names).items() if key.isupper() and isinstance(value, str) and "." in value]


def _literals(path: Path):
    """String constants of a module, docstrings and comments left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_module_but_the_owner_spells_an_output_file_name():
    assert {"eval_metrics.json", "cells.parquet", "perturbation.png", ".stages", "_labeled.dataset"} <= set(OWNED)
    spelled = [
        f"{path.relative_to(SOURCE)}:{line}: {text!r}"
        for path in sorted(SOURCE.rglob("*.py"))
        if path.name != "_constants.py"
        for line, text in _literals(path)
        for name in OWNED
        if name in text and " " not in text  # a path's part; messages and help that quote a name are prose
    ]
    assert not spelled, spelled
