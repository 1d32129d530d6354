"""Every Markdown file the repository's docs, code and deploy files name exists in the repository
(a name like ``engineering.md`` that lives elsewhere is a dead end for a reader)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: where references are written (not the venv, build output or test fixtures)
SOURCES = ("README.md", "CHANGELOG.md", "Makefile", "pyproject.toml", "docs", "deploy", "stream",
           "state", "schemas", "processors", "bench")
SUFFIXES = {".md", ".py", ".yaml", ".yml", ".sh", ".toml", ".json", ""}
#: a file name ending in .md, not inside a URL (``https://host/docs/x.md`` is not checked)
MD_NAME = re.compile(r"(?<![:A-Za-z0-9_./-])[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b")


def text_files() -> list[Path]:
    out: list[Path] = []
    for name in SOURCES:
        path = REPO / name
        if path.is_file():
            out.append(path)
        elif path.is_dir():
            out += [p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES
                    and "__pycache__" not in p.parts]
    return out


def test_every_named_markdown_file_exists() -> None:
    existing = {p.relative_to(REPO).as_posix() for p in REPO.glob("*.md")}
    existing |= {p.relative_to(REPO).as_posix() for p in (REPO / "docs").rglob("*.md")}
    existing |= {p.relative_to(REPO).as_posix() for p in (REPO / "deploy").rglob("*.md")}
    basenames = {name.rsplit("/", 1)[-1] for name in existing}
    missing = []
    for path in text_files():
        for ref in MD_NAME.findall(path.read_text(errors="replace")):
            resolved = (path.parent / ref).resolve()
            if resolved.is_file() and REPO in resolved.parents:
                continue
            name = ref.lstrip("./")
            if name in existing or ("/" not in name and name in basenames):
                continue
            missing.append(f"{path.relative_to(REPO)}: {ref}")
    assert missing == []
