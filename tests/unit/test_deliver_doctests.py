"""Run the examples in the stream.deliver modules' docstrings (``make test`` only collects
tests/)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import stream.deliver

MODULES = sorted(m.name for m in pkgutil.iter_modules(stream.deliver.__path__,
                                                      "stream.deliver."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_examples_exist() -> None:
    finder = doctest.DocTestFinder()
    counted = {name: sum(len(t.examples) for t in finder.find(importlib.import_module(name)))
               for name in MODULES}
    for name in ("config", "signing", "lane", "offsets", "metrics", "sender"):
        assert counted[f"stream.deliver.{name}"] > 0, name
