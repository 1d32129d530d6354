"""Run the examples in the schemas modules' docstrings (``make test`` only collects tests/)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import schemas

MODULES = sorted(m.name for m in pkgutil.iter_modules(schemas.__path__, "schemas."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_examples_exist() -> None:
    finder = doctest.DocTestFinder()
    counted = {
        name: sum(len(t.examples) for t in finder.find(importlib.import_module(name)))
        for name in MODULES
    }
    for name in ("validation", "bundle", "changes", "deadletter", "partitioner", "models"):
        assert counted[f"schemas.{name}"] > 0, name
