"""Profiles of a long replay kept mostly encoded: ``CompactStates``.

A replay of a month of events ends with every profile it met; as live ``CustomerState``
objects that is about 3 KB each (150,000 profiles: ~450 MB), encoded with ``state.codec`` it is
~380 B. ``CompactStates`` is the mapping ``ReplayResult.states`` uses for that: the ``hot``
most recently used profiles stay decoded (events of one customer come in sessions), the others
are kept as their encoding and decoded again when an event, a due instant or a caller asks for
them. The worker does the same with Redis on every bundle, so the result is the same as with
plain objects (the codec round trip changes nothing: tests/unit/test_property_engine.py and
tests/unit/test_replay_states.py); only the time of an encode or decode is added.

The sweep (``_Replayer.sweep``: event records older than the lateness dropped) visits the
decoded profiles only; an encoded one gets the same when it is encoded and when it is decoded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any

from state.codec import decode_state, encode_state

#: decoded profiles kept by default (``segstream replay --hot-profiles``)
DEFAULT_HOT = 30_000


class CompactStates(MutableMapping[str, Any]):
    """routing id -> CustomerState, the least recently used beyond ``hot`` kept encoded."""

    def __init__(self, hot: int = DEFAULT_HOT) -> None:
        if hot < 1:
            raise ValueError("hot must be at least 1")
        self.hot = hot
        self._live: OrderedDict[str, Any] = OrderedDict()
        self._cold: dict[str, bytes] = {}
        self.horizon: int | None = None  # records older than this are dropped on encoding
        self.decoded = 0  # how many times a cold profile was decoded
        self.encoded = 0

    def __getitem__(self, rid: str) -> Any:
        live = self._live
        st = live.get(rid)
        if st is not None:
            live.move_to_end(rid)
            return st
        blob = self._cold.pop(rid)  # KeyError: not a profile
        st = decode_state(blob)
        self.decoded += 1
        if self.horizon is not None and st.seen:  # what the sweeps since did to the others
            st.forget_seen_before(self.horizon)
        self._keep(rid, st)
        return st

    def get(self, rid: str, default: Any = None) -> Any:
        try:
            return self[rid]
        except KeyError:
            return default

    def __setitem__(self, rid: str, state: Any) -> None:
        self._cold.pop(rid, None)
        self._keep(rid, state)

    def _keep(self, rid: str, state: Any) -> None:
        live = self._live
        live[rid] = state
        live.move_to_end(rid)
        while len(live) > self.hot:
            old, st = live.popitem(last=False)
            if self.horizon is not None and st.seen:
                st.forget_seen_before(self.horizon)
            self._cold[old] = encode_state(st)
            self.encoded += 1

    def __delitem__(self, rid: str) -> None:
        if rid in self._live:
            del self._live[rid]
        else:
            del self._cold[rid]

    def __contains__(self, rid: object) -> bool:
        return rid in self._live or rid in self._cold

    def __iter__(self) -> Iterator[str]:
        yield from list(self._live)
        yield from list(self._cold)

    def __len__(self) -> int:
        return len(self._live) + len(self._cold)

    def hot_values(self) -> list[Any]:
        """The decoded profiles (the sweep visits these; encoded ones were swept when
        encoded)."""
        return list(self._live.values())

    def encoded_bytes(self) -> int:
        return sum(map(len, self._cold.values()))
