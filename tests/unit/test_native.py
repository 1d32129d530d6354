"""The mypyc build of the pure core (processors/native.py, build_native.py): which implementation
loads, the pure-Python fallback (SEGSTREAM_PURE_PYTHON=1, stale or missing build), and that both
give byte-identical results. The default run uses the compiled modules (``make install``);
``test_the_pure_python_modules_pass_the_engine_suite`` runs the engine's tests on the sources."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors import native
from stream.cli import main as cli_main
from stream.tools.generate import GeneratorConfig, generate

ROOT = Path(__file__).resolve().parents[2]
PURE = os.environ.get(native.ENV_PURE, "") not in {"", "0"}
# The engine's tests, re-run on the .py sources (about 30 s).
PURE_SUBSET = [
    "tests/unit/test_engine.py", "tests/unit/test_engine_semantics.py",
    "tests/unit/test_engine_catalogue.py", "tests/unit/test_property_engine.py",
    "tests/unit/test_lang_doctests.py", "tests/unit/test_state.py", "tests/unit/test_native.py",
]


def run_pure(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, native.ENV_PURE: "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_the_loaded_implementation_matches_the_environment() -> None:
    import processors.engine  # noqa: PLC0415 - load every compiled module
    import processors.replay  # noqa: F401, PLC0415
    import state.codec  # noqa: F401, PLC0415

    files = native.loaded_files()
    assert sorted(files) == sorted(native.COMPILED_MODULES)
    if PURE:
        assert not native.compiled()
        assert all(f.endswith(".py") for f in files.values()), files
        return
    problem = native.build_problem()
    assert problem is None, f"mypyc build not in use: {problem}"
    assert native.compiled()
    assert all(f.endswith(".so") for f in files.values()), files


def test_the_environment_variable_loads_the_py_sources() -> None:
    code = ("import json, processors.engine, processors.replay, state.codec; "
            "from processors import native; "
            "print(json.dumps([native.compiled(), native.describe(), native.loaded_files()]))")
    out = run_pure("-c", code)
    assert out.returncode == 0, out.stderr
    compiled, describe, files = json.loads(out.stdout)
    assert compiled is False
    assert describe == "pure Python (SEGSTREAM_PURE_PYTHON=1)"
    assert sorted(files) == sorted(native.COMPILED_MODULES)
    assert all(f.endswith(".py") for f in files.values()), files


def test_an_edited_source_makes_the_build_stale(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A source that differs from the one compiled is never shadowed by old compiled code."""
    manifest = {m: native.digest(native.source_path(m)) for m in native.COMPILED_MODULES}
    manifest["processors.merge"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(native, "MANIFEST", tmp_path / "manifest.json")
    assert native.build_problem() == \
        "stale: processors/merge.py changed since the build (run make install)"
    del manifest["processors.merge"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert native.build_problem() == "built for another module list (run make install)"
    monkeypatch.setattr(native, "MANIFEST", tmp_path / "absent.json")
    assert native.build_problem() == "not built: make install compiles it"


def test_version_says_which_engine_is_loaded(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"segstream 0.1.0 (engine: {native.describe()})\n"
    out = run_pure("-m", "stream.cli", "--version")
    assert out.stdout == "segstream 0.1.0 (engine: pure Python (SEGSTREAM_PURE_PYTHON=1))\n"


def _replay(modules: dict[str, Any], events: list[dict[str, Any]]) -> tuple[bytes, bytes]:
    catalogue = modules["processors.lang.compile"].compile_catalogue(
        modules["processors.lang.load"].load_definitions(ROOT / "processors" / "catalogue.yaml"))
    changes: list[Any] = []
    result = modules["processors.replay"].replay(
        modules["processors.engine"].Engine(catalogue), events, on_change=changes.append)
    encode = modules["state.codec"].encode_state
    states = b"".join(cid.encode() + b"\0" + encode(st)
                      for cid, st in sorted(result.states.items()))
    return orjson.dumps([tuple(c) for c in changes]), states


def test_the_loaded_engine_and_the_pure_reference_give_identical_output() -> None:
    """Same change log and encoded final states, byte for byte (compiled vs the .py sources)."""
    from schemas.validation import validate_event  # noqa: PLC0415

    raw = list(generate(GeneratorConfig(customers=300, events=6000, days=20, seed=5,
                                        duplicate_share=0.02, out_of_order_share=0.02)))
    clock = max(e["timestamp"] for e in raw) + 3_600_000
    events = [validate_event(e, clock) for e in raw]
    names = ["processors.engine", "processors.lang.compile", "processors.lang.load",
             "processors.replay", "state.codec"]
    pure = native.import_pure_copy(names)
    assert pure["processors.engine"].__spec__.origin.endswith("engine.py")
    loaded = {name: importlib.import_module(name) for name in names}
    assert pure["processors.engine"] is not loaded["processors.engine"]
    pure_log, pure_states = _replay(pure, events)
    log, states = _replay(loaded, events)
    assert len(orjson.loads(log)) > 1000
    assert log == pure_log
    assert states == pure_states


@pytest.mark.skipif(PURE, reason="already the pure-Python run")
def test_the_pure_python_modules_pass_the_engine_suite() -> None:
    out = run_pure("-m", "pytest", "-q", "-p", "no:cacheprovider", *PURE_SUBSET, timeout=240)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout.splitlines()[-1]
