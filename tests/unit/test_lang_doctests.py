"""Run the examples in the engine modules' docstrings (``make test`` only collects tests/)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "processors.lang.errors", "processors.lang.parser", "processors.lang.check",
    "processors.lang.load", "processors.lang.unparse", "processors.lang.values",
    "processors.lang.compile_ops", "processors.lang.compile", "processors.engine",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
