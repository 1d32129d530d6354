"""The shape rules of the shell and the contract packages: no function over 60 lines in
stream/, state/ or schemas/ unless it says why (a ``# long:`` comment on its first line), and
mypy strict over the whole package (pyproject.toml)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 60


def _long_functions() -> list[str]:
    found = []
    for package in ("stream", "state", "schemas"):
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > MAX_LINES and "# long:" not in lines[node.lineno - 1]:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                                     f"({length} lines)")
    return found


def test_no_unargued_function_over_60_lines() -> None:
    assert _long_functions() == []


def test_mypy_strict_covers_the_whole_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    assert config["mypy"]["strict"] is True
    assert set(config["mypy"]["files"]) == {"processors", "state", "schemas", "stream"}
    assert config["ruff"]["lint"]["mccabe"]["max-complexity"] == 12
