"""The catalogue builder (shared series, traits, common sub-expressions) and
:func:`compile_catalogue`."""

from __future__ import annotations

import zlib
from typing import Any

from processors.hashing import series_hash
from processors.lang import ast
from processors.lang.compile.analysis import constant_when_empty, prop_names, walk
from processors.lang.compile.model import (
    CompiledCatalogue,
    CompiledSegment,
    Epoch,
    Fn,
    Input,
    NextFn,
    SeqSpec,
    SeriesSpec,
    TypeHandler,
    V,
)
from processors.lang.compile.ops import filter_fn
from processors.lang.compile.segment import SegmentCompiler
from processors.lang.compile.timing import MEMO_NODES, next_of
from processors.lang.refs import expanded_conditions
from processors.lang.unparse import unparse, unparse_events, unparse_sequence
from processors.lang.vocab import CART_TYPES
from state.model import SeqState, SeriesState


class CatalogueBuilder:
    """What the segments of one catalogue share while they are compiled."""

    def __init__(self) -> None:
        self.specs: dict[str, SeriesSpec] = {}
        self.seq_specs: dict[str, SeqSpec] = {}
        self.traits: set[str] = set()
        self.needs_cart = False
        self.needs_purchases = False
        self.epoch = Epoch()  # the compiled catalogue's: its memoised values use it
        # canonical text -> (value, next-change producers, event types, inputs)
        self.cse: dict[str, tuple[V, list[NextFn], frozenset[str], frozenset[Input]]] = {}
        self.schedules: dict[Any, Fn] = {}  # shared expiry schedules of count combinations
        self.uses: dict[str, int] = {}  # canonical text -> occurrences across segments

    def count_uses(self, node: ast.Expr) -> None:
        for n in walk(node):
            if isinstance(n, MEMO_NODES):
                key = unparse(n)
                self.uses[key] = self.uses.get(key, 0) + 1

    def series(self, es: ast.EventSet) -> SeriesSpec:
        text = unparse_events(es)
        spec = self.specs.get(text)
        if spec is None:
            key = series_hash(text)
            if any(s.key == key for s in self.specs.values()):  # 64-bit: never in practice
                raise ValueError(f"series key collision for {text!r}; rename a filter value")
            match = None if es.filter is None else filter_fn(es.filter)
            spec = SeriesSpec(len(self.specs), key, text, es.types, match,
                              filter_props=prop_names(es.filter))
            self.specs[text] = spec
        return spec

    def sequence(self, seq: ast.Sequence) -> SeqSpec:
        text = unparse_sequence(seq)
        spec = self.seq_specs.get(text)
        if spec is None:
            key = series_hash("seq:" + text)
            if any(s.key == key for s in self.seq_specs.values()):  # 64-bit: never in practice
                raise ValueError(f"sequence key collision for {text!r}")
            steps = tuple((es.types, None if es.filter is None else filter_fn(es.filter))
                          for es in seq.steps)
            props = frozenset().union(*(prop_names(es.filter) for es in seq.steps))
            spec = SeqSpec(len(self.seq_specs), key, text, steps, seq.within_ms, seq.on,
                           props | ({seq.on} if seq.on is not None else frozenset()))
            self.seq_specs[text] = spec
        return spec


def compile_catalogue(catalogue: ast.Catalogue) -> CompiledCatalogue:
    """Compile the enabled segments of ``catalogue`` (disabled ones have no members)."""
    builder = CatalogueBuilder()
    segments: list[CompiledSegment] = []
    enabled = tuple(s for s in catalogue.segments if s.enabled)
    conditions = expanded_conditions(enabled)  # segment.NAME replaced by NAME's condition
    for seg in enabled:
        builder.count_uses(conditions[seg.name])
    for seg in enabled:
        sc = SegmentCompiler(builder)
        v = sc.value(conditions[seg.name])
        fn = v.fn
        if v.kind != "bool":
            raise TypeError(f"segment {seg.name!r}: condition is not a boolean")
        segments.append(CompiledSegment(
            len(segments), seg.name, seg, fn,
            frozenset(sc.types), frozenset(sc.inputs), bool(sc.producers),
            next_of(sc.producers), constant_when_empty(conditions[seg.name]),
        ))
    specs = tuple(builder.specs.values())
    handlers: dict[str, TypeHandler] = {}
    seqs = tuple(builder.seq_specs.values())
    all_types = ({t for s in specs for t in s.types} | {t for s in segments for t in s.types}
                 | {t for q in seqs for t in q.types})
    for typ in sorted(all_types):
        handlers[typ] = TypeHandler(
            tuple((s.index, s.match) for s in specs if typ in s.types),
            tuple(s.index for s in segments if typ in s.types),
            builder.needs_cart and typ in CART_TYPES,
            builder.needs_purchases and typ == "purchase",
            typ == "identify" and bool(builder.traits),
        )
    text = "\n".join(f"{s.name}:{unparse(conditions[s.name])}" for s in segments)
    fingerprint = zlib.crc32(f"{catalogue.allowed_lateness_ms}\n{text}".encode())
    return CompiledCatalogue(
        catalogue.version, catalogue.allowed_lateness_ms, tuple(segments),
        tuple(s.name for s in segments), specs, handlers, builder.needs_cart,
        builder.needs_purchases, frozenset(builder.traits),
        tuple(s.index for s in segments if s.time_dependent), fingerprint,
        tuple(SeriesState(s.key, tuple(s.props), s.hours) for s in specs), builder.epoch,
        seqs, tuple(SeqState(q.key) for q in seqs),
    )

