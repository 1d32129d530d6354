"""The compiler's output types: series specs, compiled segments, type handlers, the
catalogue, the evaluation epoch and a segment's typed inputs."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from processors.lang import ast
from processors.lang.values import is_number
from state.model import CustomerState, SeqState, SeriesState

Fn = Callable[[CustomerState, int], Any]
NextFn = Callable[[CustomerState, int], int]
Lin = tuple[float, float] | None  # (value at now, slope per ms) of a value linear in now
LinFn = Callable[[CustomerState, int], Lin]
Match = Callable[[dict[str, Any]], bool]


class Epoch:
    """The evaluation epoch of one compiled catalogue: the engine bumps it before each batch
    of evaluations of one state at one instant; memoised shared sub-expressions are valid
    within one epoch only."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> None:
        self.value += 1


@dataclass(frozen=True)
class SeriesInput:
    """A segment reads series ``index`` (the event selection ``catalogue.series[index]``)."""

    index: int


@dataclass(frozen=True)
class TraitInput:
    """A segment reads profile trait ``name`` (set by identify events)."""

    name: str


@dataclass(frozen=True)
class FactInput:
    """A segment reads the cart (``cart``) or the purchase totals (``purchases``)."""

    name: str


@dataclass(frozen=True)
class SeqInput:
    """A segment reads sequence ``index`` (``catalogue.sequences[index]``)."""

    index: int


CART = FactInput("cart")
PURCHASES = FactInput("purchases")
Input = SeriesInput | TraitInput | FactInput | SeqInput


@dataclass
class SeriesSpec:
    """One distinct event selection kept in the state."""

    index: int
    key: int  # series_hash of ``text``: identifies the series in encoded states
    text: str
    types: tuple[str, ...]
    match: Match | None
    window_ms: int = 0  # largest window over it (0: no timestamps kept)
    props: list[str] = field(default_factory=list)  # summed/averaged properties
    hours: bool = False  # keeps a 24-hour histogram (hour_share)
    filter_props: frozenset[str] = frozenset()  # properties its filter reads

    @property
    def legacy_key(self) -> int:
        """The key of format-1 states written before series_hash (crc32 of the text)."""
        return zlib.crc32(self.text.encode())


@dataclass
class SeqSpec:
    """One distinct positive sequence ``A then B ... within T [on P]`` kept in the state."""

    index: int
    key: int  # series_hash of ``text``: identifies the sequence in encoded states
    text: str
    steps: tuple[tuple[tuple[str, ...], Match | None], ...]  # (types, filter) per step
    within_ms: int
    on: str | None
    filter_props: frozenset[str] = frozenset()  # properties its filters (and on) read

    @property
    def types(self) -> frozenset[str]:
        return frozenset(t for types, _ in self.steps for t in types)


@dataclass(frozen=True)
class CompiledSegment:
    index: int
    name: str
    definition: ast.SegmentDef
    fn: Callable[[CustomerState, int], bool]
    types: frozenset[str]
    inputs: frozenset[Input]  # the state parts it reads (apply() re-evaluates on those)
    time_dependent: bool
    next_change: NextFn
    constant_when_empty: bool  # same value at every instant for a customer with no data


class TypeHandler(NamedTuple):
    """What an event of one type touches: series (index, filter) and affected segments."""

    series: tuple[tuple[int, Match | None], ...]
    segments: tuple[int, ...]
    cart: bool
    purchases: bool
    traits: bool


@dataclass(frozen=True)
class CompiledCatalogue:
    version: str
    allowed_lateness_ms: int
    segments: tuple[CompiledSegment, ...]
    names: tuple[str, ...]
    series: tuple[SeriesSpec, ...]
    handlers: dict[str, TypeHandler]
    needs_cart: bool
    needs_purchases: bool
    traits: frozenset[str]
    time_segments: tuple[int, ...]
    fingerprint: int
    empty_series: tuple[SeriesState, ...]  # shared, never mutated: series nobody has used
    epoch: Epoch  # memoised sub-expressions of this catalogue are valid within one epoch
    sequences: tuple[SeqSpec, ...] = ()  # positive sequences (``state.seqs`` positionally)
    empty_seqs: tuple[SeqState, ...] = ()  # shared, never mutated: sequences nobody fed yet


class V(NamedTuple):
    """A compiled value: evaluator, kind (num/bool/str/any), constant, linear form."""

    fn: Fn
    kind: str
    const: bool = False
    value: Any = None
    lin: LinFn | None = None  # set when the value varies linearly with now


def const(v: Any) -> V:
    kind = "bool" if isinstance(v, bool) else "num" if is_number(v) else "str" \
        if isinstance(v, str) else "any"
    return V(lambda st, now: v, kind, True, v)

