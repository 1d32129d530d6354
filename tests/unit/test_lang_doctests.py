"""Run the examples in the engine modules' docstrings (``make test`` only collects tests/).

A mypyc-compiled module keeps no docstrings doctest can find, so for those the examples are
read from the ``.py`` source and run against the loaded (compiled) module's namespace: the
examples check the code that actually runs, compiled or not.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import sys
from types import ModuleType

import pytest

from processors import native

MODULES = [
    "processors.lang.errors", "processors.lang.parser", "processors.lang.check",
    "processors.lang.load", "processors.lang.props", "processors.lang.typesfile",
    "processors.lang.unparse",
    "processors.lang.values",
    "processors.lang.compile.ops", "processors.lang.compile.counts", "processors.engine",
]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def source_module(name: str) -> ModuleType:
    """``name`` executed from its .py source under another module name (the docstrings)."""
    alias = f"_doctest_source_.{name}"
    spec = importlib.util.spec_from_file_location(alias, native.source_path(name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[alias]
    return module


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    if not (native.compiled() and name in native.COMPILED_MODULES):
        result = doctest.testmod(module, optionflags=FLAGS)
        assert result.attempted > 0, f"{name} has no examples"
        assert result.failed == 0
        return
    tests = doctest.DocTestFinder().find(source_module(name), name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        test.globs = dict(vars(module))  # the compiled module's functions and classes
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
