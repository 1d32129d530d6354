"""Load and validate a definitions file (YAML) into an ``ast.Catalogue``.

Shape::

    version: "2026-11-23.1"            # stamped on changes caused by a definitions change
    settings: {allowed_lateness: 1h}   # optional; default 1h
    segments:
      - name: abandoned_cart           # [a-z][a-z0-9_]*, unique
        description: Added to cart, no purchase within an hour.
        condition: cart.items > 0 and cart_add then no purchase within 1h
        enabled: true                  # optional
        tags: [cart]                   # optional

Every problem raises ``DefinitionError`` naming the segment and, for conditions, the column.

>>> cat = load_definitions('''
... version: "1"
... segments:
...   - {name: buyers, description: Bought in 30 days, condition: "count(purchase, 30d) > 0"}
... ''')
>>> cat.version, cat.allowed_lateness_ms, [s.name for s in cat.segments]
('1', 3600000, ['buyers'])
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from processors.lang import ast
from processors.lang.check import check_condition
from processors.lang.errors import DefinitionError, did_you_mean
from processors.lang.parser import parse, parse_duration

DEFAULT_LATENESS_MS = 3_600_000
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
_TOP_KEYS = ("version", "settings", "segments")
_SETTING_KEYS = ("allowed_lateness",)
_SEGMENT_KEYS = ("name", "description", "condition", "enabled", "tags")


def _file_error(msg: str) -> DefinitionError:
    return DefinitionError(None, None, f"definitions: {msg}")


def _unknown_keys(d: dict[Any, Any], allowed: tuple[str, ...], where: str,
                  segment: str | None = None) -> None:
    for k in d:
        if k not in allowed:
            hint = did_you_mean(str(k), allowed)
            msg = f"unknown key '{k}' in {where}{hint}; allowed: {', '.join(allowed)}"
            raise DefinitionError(segment, None, msg) if segment else _file_error(msg)


def parse_condition(segment: str, text: str) -> ast.Expr:
    """Parse and type-check one condition; errors name ``segment`` and show the column."""
    try:
        node = parse(text)
        check_condition(node)
    except DefinitionError as e:
        raise e.with_context(segment, text) from None
    return node


def _segment(raw: Any, index: int) -> ast.SegmentDef:
    if not isinstance(raw, dict):
        raise _file_error(f"segments[{index}] must be a mapping with name, description, condition")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _file_error(f"segments[{index}]: name {name!r} must match [a-z][a-z0-9_]*")
    _unknown_keys(raw, _SEGMENT_KEYS, "a segment", name)
    desc = raw.get("description")
    if not isinstance(desc, str) or not desc.strip():
        raise DefinitionError(name, None, "description is required (a non-empty string)")
    text = raw.get("condition")
    if not isinstance(text, str) or not text.strip():
        raise DefinitionError(name, None, "condition is required (a non-empty string)")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise DefinitionError(name, None, f"enabled must be true or false, not {enabled!r}")
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DefinitionError(name, None, "tags must be a list of strings")
    return ast.SegmentDef(name, desc.strip(), text, parse_condition(name, text), enabled,
                        tuple(tags))


def _lateness(settings: Any) -> int:
    if settings is None:
        return DEFAULT_LATENESS_MS
    if not isinstance(settings, dict):
        raise _file_error("settings must be a mapping")
    _unknown_keys(settings, _SETTING_KEYS, "settings")
    raw = settings.get("allowed_lateness", "1h")
    if raw in (0, "0"):
        return 0
    if not isinstance(raw, str):
        raise _file_error(f"allowed_lateness must be a duration such as 1h, not {raw!r}")
    try:
        return parse_duration(raw)
    except DefinitionError:
        raise _file_error(f"allowed_lateness must be a duration such as 1h, not {raw!r}") from None


def load_definitions(source: str | Path) -> ast.Catalogue:
    """Parse and validate a definitions file given as a path or as YAML text."""
    if isinstance(source, Path) or (
        "\n" not in source and source.strip().endswith((".yaml", ".yml"))
    ):
        text = Path(source).read_text(encoding="utf-8")
    else:
        text = source
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _file_error(f"not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise _file_error("the file must be a mapping with version and segments")
    _unknown_keys(doc, _TOP_KEYS, "the file")
    version = doc.get("version")
    if isinstance(version, int | float) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version.strip():
        raise _file_error('version is required (a string such as "2026-11-23.1")')
    lateness = _lateness(doc.get("settings"))
    raw_segments = doc.get("segments")
    if not isinstance(raw_segments, list) or not raw_segments:
        raise _file_error("segments must be a non-empty list")
    segments: list[ast.SegmentDef] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_segments):
        seg = _segment(raw, i)
        if seg.name in seen:
            raise DefinitionError(seg.name, None, "duplicate segment name")
        seen.add(seg.name)
        segments.append(seg)
    return ast.Catalogue(version.strip(), lateness, tuple(segments))
