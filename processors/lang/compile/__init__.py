"""Compile a catalogue's ASTs into fast evaluators over ``state.model.CustomerState``.

For each segment the compiler produces:

- ``fn(state, now) -> bool``: the condition at instant ``now`` (closures, no interpretation);
- ``types``: the event types whose events can change the value (apply() only re-evaluates
  segments affected by the event's type);
- ``next_change(state, now) -> int``: the earliest instant after ``now`` where the value may
  change with no new event (``NEVER`` if none), the minimum over the time-dependent atoms:
  window expiry ``ts + W`` of the oldest in-window event, ``X`` and ``X + D`` for
  ``X within D``, ``ta + T`` for ``then no``, the next UTC midnight for calendar functions, and
  the crossing instant of comparisons involving ``now``/``since`` (values linear in time).
  Candidates may be early (an evaluation that changes nothing), never late.

Distinct event selections (``types where filter``) become shared *series* in the state; the
catalogue also records which traits, cart and purchase facts it needs, so that the state keeps
nothing else.

Modules of the package, one idea each:

- ``model``: the output types (``CompiledCatalogue``, ``CompiledSegment``, ``SeriesSpec``,
  ``TypeHandler``), the evaluation ``Epoch`` and a segment's typed inputs;
- ``analysis``: static facts about ASTs (constant for an empty profile, filter properties);
- ``counts``: count algebra (thresholds, integer-weighted sums, expiry schedules);
- ``timing``: next-change combinators (memoisation per epoch, roots of linear values, and/or);
- ``ops``: comparison closures and ``where`` filters;
- ``temporal``: compilers of the time-dependent atoms (windows, within, then no, calendar);
- ``segment``: the segment compiler (expression forms);
- ``catalogue``: the catalogue builder and :func:`compile_catalogue`.
"""

from __future__ import annotations

from processors.lang.compile.analysis import constant_when_empty
from processors.lang.compile.catalogue import compile_catalogue
from processors.lang.compile.model import (
    CART,
    PURCHASES,
    CompiledCatalogue,
    CompiledSegment,
    Epoch,
    FactInput,
    Input,
    SeqInput,
    SeqSpec,
    SeriesInput,
    SeriesSpec,
    TraitInput,
    TypeHandler,
)

__all__ = [
    "CART", "PURCHASES", "CompiledCatalogue", "CompiledSegment", "Epoch", "FactInput", "Input",
    "SeqInput", "SeqSpec", "SeriesInput", "SeriesSpec", "TraitInput", "TypeHandler",
    "compile_catalogue", "constant_when_empty",
]
