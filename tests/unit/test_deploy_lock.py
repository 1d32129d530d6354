"""deploy/compose/requirements.lock and build-requirements.lock, checked offline: every line is
``name==version`` with SHA-256 hashes, the lock is exactly the runtime dependency closure of
pyproject.toml at the versions installed here (those the tests run with), and the Dockerfile
installs from it with hashes required."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"
ENTRY = re.compile(r"^([A-Za-z0-9._-]+)==([^ ]+) \\\n"
                   r"((?:    --hash=sha256:[0-9a-f]{64}(?: \\\n|\n))+)", re.MULTILINE)


def locked(path: Path) -> dict[str, str]:
    text = path.read_text()
    entries = {canonicalize_name(m.group(1)): m.group(2) for m in ENTRY.finditer(text)}
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    pins = [line for line in body if not line.startswith("    --hash=")]
    assert len(pins) == len(entries), "a line is not `name==version \\` followed by its hashes"
    return entries


def project() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def closure(requirements: list[str]) -> dict[str, str]:
    """The installed distributions ``requirements`` need, transitively (extras followed)."""
    found: dict[str, str] = {}
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        dist = metadata.distribution(name)
        extras = sorted(req.extras)
        key = name
        if key in found and not extras:
            continue
        found[key] = dist.version
        todo.extend((Requirement(sub), ex) for sub in dist.requires or []
                    for ex in ["", *extras])
    return found


def test_the_lock_is_the_runtime_closure_at_the_tested_versions() -> None:
    deps = list(project()["dependencies"])  # type: ignore[call-overload]
    lock = locked(COMPOSE / "requirements.lock")
    assert lock == closure(deps), "stale: run python deploy/compose/lock.py"
    for dep in deps:
        req = Requirement(dep)
        assert lock[canonicalize_name(req.name)] in req.specifier, dep
    assert "psutil" not in lock and "segstream" not in lock


def test_the_build_lock_pins_the_setuptools_pyproject_needs() -> None:
    build = locked(COMPOSE / "build-requirements.lock")
    assert list(build) == ["setuptools"]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    (spec,) = [Requirement(r) for r in requires if r.startswith("setuptools")]
    assert build["setuptools"] in spec.specifier
    dev = [Requirement(d) for d in project()["optional-dependencies"]["dev"]]  # type: ignore[index]
    assert f"=={build['setuptools']}" in {str(d.specifier) for d in dev if d.name == "setuptools"}


def test_the_dockerfile_installs_only_hashed_files() -> None:
    text = (COMPOSE / "Dockerfile").read_text()
    commands = re.sub(r"\\\n\s*", " ", text)
    installs = [line for line in commands.splitlines()
                if re.search(r"pip (install|download|wheel)", line)]
    assert installs
    for line in installs:
        for step in re.split(r"&&", line):
            if re.search(r"pip (install|download)", step) and "segstream-*.whl" not in step:
                assert "--require-hashes" in step, step
            if "pip wheel" in step:
                assert "--no-deps" in step and "--no-build-isolation" in step, step
    assert "requirements.lock" in text and "build-requirements.lock" in text
