"""Set the base of every alert's runbook_url (rules/*.yml and the expected alerts of
rules_test.yml): ``<base>/operations.md#<alert in lower case>``.

Alertmanager, Grafana and PagerDuty show runbook_url as a link, so it must be absolute; the one
place to change is the base, where this install's copy of docs/ is served:

    python deploy/prometheus/runbooks.py https://docs.example.net/segstream   # rewrite
    python deploy/prometheus/runbooks.py --check   # exit 1 unless every URL uses one base

The files are rewritten line by line (comments and layout kept); tests/unit/test_deploy_grafana.py
checks that every URL is ``<one base>/operations.md#<an existing section>``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = (*sorted((HERE / "rules").glob("*.yml")), HERE / "rules_test.yml")
URL = re.compile(r'^(\s*runbook_url:\s*")([^"#]*)/operations\.md(#[a-z0-9-]+")\s*$')


def bases(text: str) -> set[str]:
    """The runbook bases used in ``text`` (a line naming runbook_url otherwise is an error)."""
    found: set[str] = set()
    for line in text.splitlines():
        if "runbook_url:" not in line:
            continue
        m = URL.match(line)
        if m is None:
            raise ValueError(f"runbook_url not of the form \"<base>/operations.md#...\": {line}")
        found.add(m.group(2))
    return found


def rebase(text: str, base: str) -> str:
    """``text`` with every runbook_url's base replaced by ``base``.

    >>> rebase('  runbook_url: "https://a/docs/operations.md#x"\\n', "https://b")
    '  runbook_url: "https://b/operations.md#x"\\n'
    """
    base = base.rstrip("/")
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        m = URL.match(body)
        out.append(f"{m.group(1)}{base}/operations.md{m.group(3)}{line[len(body):]}" if m
                   else line)
    return "".join(out)


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        try:
            used = set().union(*(bases(p.read_text()) for p in FILES))
        except ValueError as exc:
            sys.stderr.write(f"{exc}\n")
            return 1
        if len(used) != 1 or not next(iter(used)).startswith(("https://", "http://")):
            sys.stderr.write(f"runbook_url bases: {sorted(used)} (want one absolute base)\n")
            return 1
        return 0
    if len(argv) != 1 or not argv[0].startswith(("https://", "http://")):
        sys.stderr.write("usage: runbooks.py https://where/the/docs/are | --check\n")
        return 2
    for path in FILES:
        path.write_text(rebase(path.read_text(), argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
