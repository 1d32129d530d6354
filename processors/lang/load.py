"""Load and validate a definitions file (YAML) into an ``ast.Catalogue``.

Shape::

    version: "2026-11-23.1"            # a string; stamped on changes caused by a definitions change
    settings: {allowed_lateness: 1h}   # optional; default 1h
    segments:
      - name: abandoned_cart           # [a-z][a-z0-9_]*, unique
        description: Added to cart, no purchase within an hour.
        condition: cart.items > 0 and cart_add then no purchase within 1h
        enabled: true                  # optional
        tags: [cart]                   # optional

Every problem of the file is reported at once: ``DefinitionError`` (one problem) or
``CombinedDefinitionError`` (several, in file order), each naming the file, the line, the
segment and the key, and for conditions the column.

>>> cat = load_definitions('''
... version: "1"
... segments:
...   - {name: buyers, description: Bought in 30 days, condition: "count(purchase, 30d) > 0"}
... ''')
>>> cat.version, cat.allowed_lateness_ms, [s.name for s in cat.segments]
('1', 3600000, ['buyers'])
>>> load_definitions('version: 1\\nsegments: []', name="defs.yaml")
Traceback (most recent call last):
...
processors.lang.errors.CombinedDefinitionError: defs.yaml:1: version must be a string: quote it ...
defs.yaml:2: segments must be a non-empty list
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import yaml

from processors.lang import ast
from processors.lang.check import check_condition
from processors.lang.errors import CombinedDefinitionError, DefinitionError, did_you_mean
from processors.lang.parser import parse, parse_duration
from processors.lang.props import Kinds, check_properties
from processors.lang.refs import resolve
from schemas.eventtypes import EventTypes, property_kinds

DEFAULT_LATENESS_MS = 3_600_000
DEFAULT_SOURCE = "definitions"  # how errors name a file given as text without a name
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
_TOP_KEYS = ("version", "settings", "segments")
_SETTING_KEYS = ("allowed_lateness",)
_SEGMENT_KEYS = ("name", "description", "condition", "enabled", "tags")


# --- YAML with line numbers and duplicate keys ------------------------------------------------
class _Map(dict[Any, Any]):
    """A YAML mapping that knows its line, its keys' lines and its values' lines and styles."""

    line: int
    key_lines: dict[Any, int]
    value_lines: dict[Any, tuple[int, str | None]]


class _Loader(yaml.SafeLoader):
    """SafeLoader building ``_Map`` mappings and recording duplicate keys (the last wins)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[Any, int, int]] = []  # (key, line, first line)


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Iterator[_Map]:
    data = _Map()
    data.line, data.key_lines, data.value_lines = node.start_mark.line + 1, {}, {}
    yield data
    explicit = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)  # `<<` merge keys: merged pairs first, explicit ones override
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=False)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found an unhashable key",
                key_node.start_mark) from None
        line = key_node.start_mark.line + 1
        if id(key_node) in explicit and key in data.key_lines:
            loader.duplicates.append((key, line, data.key_lines[key]))
        data[key] = loader.construct_object(value_node, deep=False)
        data.key_lines[key] = line
        style = value_node.style if isinstance(value_node, yaml.ScalarNode) else None
        data.value_lines[key] = (value_node.start_mark.line + 1, style)


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def read_yaml(text: str, source: str) -> tuple[Any, list[DefinitionError]]:
    """The document and its duplicate-key errors; raises DefinitionError on invalid YAML."""
    def bad(line: int | None, msg: str) -> DefinitionError:
        return DefinitionError(None, None, f"not valid YAML: {msg}", line=line, source=source)

    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:  # a character YAML does not allow
        raise bad(text.count("\n", 0, e.position) + 1,
                  f"character #x{int(e.character):04x} is not allowed ({e.reason})") from None
    try:
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" (column {mark.column + 1})" if mark is not None else ""
        context = f"{e.context}: " if e.context else ""
        raise bad(mark.line + 1 if mark is not None else None,
                  f"{context}{e.problem}{where}") from None
    except yaml.YAMLError as e:
        raise bad(None, str(e).replace("<unicode string>", source)) from None
    except RecursionError:
        raise bad(None, "nested too deeply") from None
    finally:
        loader.dispose()
    dups = [DefinitionError(None, None, f"duplicate key {k!r} (first on line {first})",
                            line=line, source=source) for k, line, first in loader.duplicates]
    return doc, dups


# --- validation --------------------------------------------------------------------------------
def key_line(d: Any, key: str) -> int | None:
    """The line of ``key`` in mapping ``d`` (the mapping's line when the key is missing)."""
    if isinstance(d, _Map):
        return d.key_lines.get(key, d.line)
    return None


def _condition_line(raw: Any, text: str, pos: int | None) -> int | None:
    """The file line of offset ``pos`` of the condition of segment mapping ``raw``."""
    if not isinstance(raw, _Map) or "condition" not in raw.value_lines:
        return key_line(raw, "condition")
    line, style = raw.value_lines["condition"]
    if style == "|" and pos is not None:  # literal block: the text starts on the next line
        return line + 1 + text.count("\n", 0, pos)
    return line


def parse_condition(segment: str, text: str, types: EventTypes | None = None,
                    kinds: Kinds | None = None) -> ast.Expr:
    """Parse and type-check one condition; errors name ``segment`` and show the column.

    Event types and property names are checked against the built-in types and ``types`` (the
    custom types of a types file); ``kinds`` is ``property_kinds(types)`` when already known.
    """
    try:
        node = parse(text, types.names if types is not None else ())
        check_condition(node)
        check_properties(node, kinds if kinds is not None else property_kinds(types))
    except DefinitionError as e:
        raise e.with_context(segment, text) from None
    return node


class _Checker:
    """Collects every problem of one file, each with its line."""

    def __init__(self, source: str, types: EventTypes | None = None) -> None:
        self.source = source
        self.errors: list[DefinitionError] = []
        self.types = types
        self.kinds = property_kinds(types)

    def add(self, line: int | None, msg: str, segment: str | None = None,
            where: str | None = None) -> None:
        self.errors.append(DefinitionError(segment, None, msg, where=where, line=line,
                                           source=self.source))

    def unknown_keys(self, d: dict[Any, Any], allowed: tuple[str, ...], what: str,
                     segment: str | None = None) -> None:
        for k in d:
            if k not in allowed:
                hint = did_you_mean(str(k), allowed)
                self.add(key_line(d, k), f"unknown key '{k}' in {what}{hint}; allowed: "
                         f"{', '.join(allowed)}", segment, None)

    def version(self, doc: dict[Any, Any]) -> str:
        version = doc.get("version")
        line = key_line(doc, "version")
        if isinstance(version, str) and version.strip():
            return version.strip()
        if isinstance(version, int | float) and not isinstance(version, bool):
            self.add(line, f'version must be a string: quote it (version: "{version}")')
        elif version is not None and not isinstance(version, str):
            self.add(line, 'version must be a string: quote it (version: "2026-11-23.1")')
        else:
            self.add(line, 'version is required (a string such as "2026-11-23.1")')
        return ""

    def lateness(self, doc: dict[Any, Any]) -> int:
        settings = doc.get("settings")
        if settings is None:
            return DEFAULT_LATENESS_MS
        if not isinstance(settings, dict):
            self.add(key_line(doc, "settings"), "settings must be a mapping")
            return DEFAULT_LATENESS_MS
        self.unknown_keys(settings, _SETTING_KEYS, "settings")
        raw = settings.get("allowed_lateness", "1h")
        if raw in (0, "0") and not isinstance(raw, bool):
            return 0
        if isinstance(raw, str):
            try:
                return parse_duration(raw)
            except DefinitionError:
                pass
        self.add(key_line(settings, "allowed_lateness"),
                 f"settings: allowed_lateness must be a duration such as 1h, not {raw!r}")
        return DEFAULT_LATENESS_MS

    def segment(self, raw: Any, index: int, line: int | None) -> ast.SegmentDef | None:
        if not isinstance(raw, dict):
            self.add(line, f"segments[{index}] must be a mapping with name, description, "
                           "condition")
            return None
        before = len(self.errors)
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            self.add(key_line(raw, "name"),
                     f"segments[{index}]: name {name!r} must match [a-z][a-z0-9_]*")
            name = None
        who = name if name is not None else f"segments[{index}]"

        def bad(key: str, msg: str) -> None:
            if name is None:
                self.add(key_line(raw, key), f"segments[{index}]: {key}: {msg}")
            else:
                self.add(key_line(raw, key), msg, name, key)

        self.unknown_keys(raw, _SEGMENT_KEYS, "a segment", name)
        desc = raw.get("description")
        if not isinstance(desc, str) or not desc.strip():
            bad("description", "required (a non-empty string)")
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            bad("enabled", f"must be true or false, not {enabled!r}")
        tags = raw.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            bad("tags", "must be a list of strings")
        text = raw.get("condition")
        node: ast.Expr | None = None
        if not isinstance(text, str) or not text.strip():
            bad("condition", "required (a non-empty string)")
        else:
            try:
                node = parse_condition(who, text, self.types, self.kinds)
            except DefinitionError as e:
                self.errors.append(e.located(self.source, _condition_line(raw, text, e.pos)))
        if len(self.errors) > before or name is None or node is None:
            return None
        assert isinstance(desc, str) and isinstance(text, str) and isinstance(tags, list)
        return ast.SegmentDef(name, desc.strip(), text, node, enabled, tuple(tags))


def _resolve_refs(check: _Checker, segments: list[ast.SegmentDef], raws: dict[str, Any],
                  ) -> list[ast.SegmentDef]:
    """``segment.NAME`` references checked (errors added to ``check``), segments ordered."""
    def ref_error(name: str, ref: ast.SegmentRef | None, msg: str) -> DefinitionError:
        seg = next(s for s in segments if s.name == name)
        pos = None if ref is None else ref.pos
        return DefinitionError(name, pos, msg, seg.condition_text).located(
            check.source, _condition_line(raws[name], seg.condition_text, pos))

    ordered, errors = resolve(segments, ref_error)
    check.errors.extend(errors)
    return ordered


def _raise(errors: list[DefinitionError]) -> NoReturn:
    """Raise the errors in file order: the error itself when there is one."""
    ordered = sorted(errors, key=lambda e: e.line or 0)
    raise ordered[0] if len(ordered) == 1 else CombinedDefinitionError(ordered)


def read_document(source: str | Path, name: str | None, default_source: str, items: str,
                  ) -> tuple[dict[Any, Any], list[DefinitionError], str]:
    """(mapping, YAML problems, how errors cite the file) of a YAML file given as a path or as
    text (a definitions or an event-types file, whose list key is ``items``); raises when it
    is not UTF-8 or not a mapping."""
    if isinstance(source, Path) or (
        "\n" not in source and source.strip().endswith((".yaml", ".yml"))
    ):
        path = Path(source)
        name = name or str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DefinitionError(None, None, f"not UTF-8 text (byte {e.start})",
                                  source=name) from None
    else:
        text = source
    src = name or default_source
    doc, errors = read_yaml(text, src)
    if not isinstance(doc, dict):
        _raise([*errors, DefinitionError(
            None, None, f"the file must be a mapping with version and {items}", source=src)])
    return doc, errors, src


def load_definitions(source: str | Path, *, name: str | None = None,
                     types: EventTypes | None = None) -> ast.Catalogue:
    """Parse and validate a definitions file given as a path or as YAML text.

    ``name`` is how errors cite the file (default: the path, else ``definitions``); ``types``
    the custom event types conditions may use (a types file), besides the built-in ones.
    """
    doc, errors, src = read_document(source, name, DEFAULT_SOURCE, "segments")
    check = _Checker(src, types)
    check.errors.extend(errors)
    check.unknown_keys(doc, _TOP_KEYS, "the file")
    version = check.version(doc)
    lateness = check.lateness(doc)
    raw_segments = doc.get("segments")
    segments: list[ast.SegmentDef] = []
    if not isinstance(raw_segments, list) or not raw_segments:
        check.add(key_line(doc, "segments"), "segments must be a non-empty list")
        raw_segments = []
    seen: dict[str, int | None] = {}
    raws: dict[str, Any] = {}
    for i, raw in enumerate(raw_segments):
        line = raw.line if isinstance(raw, _Map) else key_line(doc, "segments")
        seg = check.segment(raw, i, line)
        seg_name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(seg_name, str) and _NAME_RE.match(seg_name):
            if seg_name in seen:
                check.add(key_line(raw, "name"), f"duplicate segment name (first on line "
                          f"{seen[seg_name]})", seg_name, "name")
                continue
            seen[seg_name] = key_line(raw, "name")
        if seg is not None:
            segments.append(seg)
            raws[seg.name] = raw
    if not check.errors:
        segments = _resolve_refs(check, segments, raws)
    if check.errors:
        _raise(check.errors)
    return ast.Catalogue(version, lateness, tuple(segments))
