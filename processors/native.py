"""Which implementation of the pure core is loaded: mypyc-compiled extensions or the .py sources.

``make install`` compiles :data:`COMPILED_MODULES` with mypyc (``build_native.py``) into
extension modules next to their sources, plus one shared runtime library
(``processors/core__mypyc*.so``) and a manifest of the sources they were built from
(``processors/native_manifest.json``). Python prefers an extension module to a ``.py`` file of
the same name, so by default the compiled code runs.

:func:`install` (called by ``processors/__init__.py`` and ``state/__init__.py``, before any of
these modules can be imported) puts a finder first on ``sys.meta_path`` that loads the ``.py``
sources of all of them instead when

- ``SEGSTREAM_PURE_PYTHON=1`` is set (the reference implementation; the test suite runs both);
- the build is stale: a source differs from the one the extensions were compiled from (an edit
  since ``make install``), so an edit is never silently shadowed by old compiled code;
- the build is missing or incomplete (compilation failed or never ran).

The group is all-or-nothing: compiled modules call each other directly inside the shared
library, so one stale module means none of them is used.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

# Modules compiled by mypyc (never stream/: I/O and Faust stay interpreted). Measured in
# docs/benchmarks.md (`make bench-engine`): these are the ones on the per-event path.
COMPILED_MODULES: tuple[str, ...] = (
    "processors.engine",
    "processors.hashing",
    "processors.merge",
    "processors.replay",
    "processors.sequences",
    "processors.types",
    "processors.lang.ast",
    "processors.lang.compile.analysis",
    "processors.lang.compile.catalogue",
    "processors.lang.compile.counts",
    "processors.lang.compile.model",
    "processors.lang.compile.ops",
    "processors.lang.compile.segment",
    "processors.lang.compile.temporal",
    "processors.lang.compile.timing",
    "processors.lang.values",
    "state.model",
    "state.codec",
)
SHARED_LIB = "processors.core__mypyc"  # mypyc's runtime + the code of every compiled module
ENV_PURE = "SEGSTREAM_PURE_PYTHON"
ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "processors" / "native_manifest.json"


def source_path(module: str) -> Path:
    """The .py source of one of :data:`COMPILED_MODULES` (relative to the repository)."""
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _extension(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.exists():
            return candidate
    return None


def build_problem() -> str | None:
    """Why the compiled extensions must not be used (None: they are complete and current)."""
    if not MANIFEST.exists():
        return "not built: make install compiles it"
    try:
        recorded = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return f"unreadable {MANIFEST.name}"
    if sorted(recorded) != sorted(COMPILED_MODULES):
        return "built for another module list (run make install)"
    for module in COMPILED_MODULES:
        if recorded[module] != digest(source_path(module)):
            return f"stale: {source_path(module).relative_to(ROOT)} changed since the build " \
                   "(run make install)"
    for module in (*COMPILED_MODULES, SHARED_LIB):
        if _extension(module) is None:
            return f"missing extension for {module} (run make install)"
    return None


class PureSourceFinder:
    """Meta-path finder: the .py source for the compiled modules (skips the extensions)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname not in COMPILED_MODULES:
            return None
        source = source_path(fullname)
        if not source.exists():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


_finder: PureSourceFinder | None = None
_installed = False


def install() -> None:
    """Decide once per process which implementation loads (idempotent)."""
    global _finder, _installed  # noqa: PLW0603 - one decision per process
    if _installed:
        return
    _installed = True
    if os.environ.get(ENV_PURE, "") not in {"", "0"}:
        reason: str | None = f"{ENV_PURE}=1"
    else:
        reason = build_problem()
    if reason is not None:
        _finder = PureSourceFinder(reason)
        sys.meta_path.insert(0, _finder)


def compiled() -> bool:
    """True when the compiled (mypyc) modules are the ones loaded."""
    install()
    return _finder is None


def describe() -> str:
    """One line for ``segstream --version`` and the worker's start-up log."""
    install()
    if _finder is None:
        return f"compiled (mypyc, {len(COMPILED_MODULES)} modules)"
    return f"pure Python ({_finder.reason})"


def loaded_files() -> dict[str, str]:
    """Module name -> file actually loaded, for the compiled modules already imported."""
    return {name: str(getattr(sys.modules[name].__spec__, "origin", ""))
            for name in COMPILED_MODULES if name in sys.modules}


def _core(name: str) -> bool:
    return name in {"processors", "state"} or name.startswith(("processors.", "state."))


def import_pure_copy(names: Sequence[str]) -> dict[str, ModuleType]:
    """Second copies of the modules ``names`` loaded from the .py sources, in this process, next
    to the ones already loaded (compiled or not), which stay untouched.

    Every ``processors``/``state`` module the copies import is a pure copy too (they bind their
    dependencies at import time), so a catalogue compiled by the copy of
    ``processors.lang.compile`` runs on the copy of the engine: the pure-Python reference for
    ``make bench-engine``'s byte-identical check. Objects of the two copies must not be mixed
    (their classes differ).
    """
    saved_modules = {k: v for k, v in sys.modules.items() if _core(k)}
    saved_meta_path = list(sys.meta_path)
    saved_env = os.environ.get(ENV_PURE)
    for k in saved_modules:
        del sys.modules[k]
    os.environ[ENV_PURE] = "1"
    sys.meta_path.insert(0, PureSourceFinder(f"{ENV_PURE}=1 (reference copy)"))
    try:
        return {name: importlib.import_module(name) for name in names}
    finally:
        for k in [k for k in sys.modules if _core(k)]:
            del sys.modules[k]
        sys.modules.update(saved_modules)
        sys.meta_path[:] = saved_meta_path
        if saved_env is None:
            del os.environ[ENV_PURE]
        else:
            os.environ[ENV_PURE] = saved_env
