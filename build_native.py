"""Compile the pure core with mypyc, in place (``make install`` runs it; ``make native`` alone).

Writes, next to the sources: one extension module per entry of
``processors.native.COMPILED_MODULES``, the shared library ``processors/core__mypyc*.so``
(mypyc's runtime and the compiled code) and ``processors/native_manifest.json`` (the sha256 of
each source, so an edited source falls back to pure Python instead of running stale code).
C files and objects go to ``build/native``. ``make clean`` removes all of it.

On failure (no C compiler, a mypyc error) it removes any partial output, prints a loud warning
and exits 0 unless ``--strict``: the product keeps working on the .py sources.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
os.environ["SEGSTREAM_PURE_PYTHON"] = "1"  # this process reads sources only

from processors import native  # noqa: E402

BUILD_DIR = ROOT / "build" / "native"


def outputs() -> list[Path]:
    """Every file the build writes next to the sources (for removal)."""
    found: list[Path] = [native.MANIFEST]
    for package in ("processors", "state"):  # also those of a previous, longer module list
        for suffix in ("so", "pyd"):
            found.extend((ROOT / package).rglob(f"*.{suffix}"))
    return found


def remove_outputs() -> None:
    for path in outputs():
        path.unlink(missing_ok=True)


def build(opt_level: str) -> None:
    from mypyc.build import mypycify  # noqa: PLC0415 - dev dependency, only when building
    from setuptools import setup  # noqa: PLC0415

    sources = [str(native.source_path(m).relative_to(ROOT)) for m in native.COMPILED_MODULES]
    group = native.SHARED_LIB.removesuffix("__mypyc")
    cwd = Path.cwd()
    os.chdir(ROOT)  # mypyc writes paths relative to the current directory
    try:
        extensions = mypycify(sources, opt_level=opt_level, group_name=group,
                              target_dir=str(BUILD_DIR / "c"))
        setup(name="segstream-native", ext_modules=extensions,
              script_args=["--quiet", "build_ext", "--inplace",
                           "--build-temp", str(BUILD_DIR / "obj"),
                           "--build-lib", str(BUILD_DIR / "lib")])
    finally:
        os.chdir(cwd)
    manifest = {m: native.digest(native.source_path(m)) for m in native.COMPILED_MODULES}
    native.MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strict", action="store_true", help="exit 1 when compilation fails")
    ap.add_argument("--clean", action="store_true", help="only remove the build outputs")
    ap.add_argument("--opt-level", default="3", help="C optimisation level (default 3)")
    a = ap.parse_args(argv)
    remove_outputs()
    shutil.rmtree(BUILD_DIR / "lib", ignore_errors=True)
    if a.clean:
        shutil.rmtree(BUILD_DIR, ignore_errors=True)
        return 0
    t = time.perf_counter()
    try:
        build(a.opt_level)
    except (Exception, SystemExit):  # setup() raises SystemExit on a compiler error
        traceback.print_exc()
        remove_outputs()
        bar = "!" * 78
        print(f"\n{bar}\nWARNING: mypyc compilation of the pure core FAILED (see above).\n"
              "segstream is installed and works on the pure-Python modules, at about 2/3 of "
              "the\ncompiled engine's throughput. `segstream --version` says which is "
              f"loaded.\n{bar}\n", file=sys.stderr)
        return 1 if a.strict else 0
    print(f"mypyc: compiled {len(native.COMPILED_MODULES)} modules in "
          f"{time.perf_counter() - t:.0f} s ({', '.join(native.COMPILED_MODULES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
