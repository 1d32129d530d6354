"""Per-customer state: bounded, holding only what the compiled catalogue needs.

The engine (``processors.engine``) owns the logic; this module owns the shapes, their bounds and
the order-sensitive parts of the profile (the cart, traits) so that out-of-order events within
the allowed lateness give the same result as the ordered stream.

Bounds (all documented in docs/time-semantics.md):

- a *series* (one distinct ``types where filter`` of the catalogue) keeps the timestamps (and
  the summed property values) of its events inside its largest window, at most
  ``SERIES_CAP`` of them; past the cap the oldest are dropped (windowed counts then undercount
  for that customer: a bot-like customer, not a shopper);
- ``seen`` keeps, for every event with event time within the allowed lateness of the clock,
  its id's 64-bit hash and a *record* (time, type, properties): duplicates within the lateness
  are never counted twice whatever their number, a late forget rebuilds the profile from the
  records newer than it, and an alias drops the events both profiles took. Memory is bound by
  the lateness and ``RATE_CAP``: a customer with that many events inside the allowed lateness
  has further events refused (``Step.reason`` ``rate_limited``, dead-lettered), not forgotten;
- ``pending`` holds events stamped ahead of the clock until the clock reaches them
  (``PENDING_CAP`` at most; past it such events are refused as late);
- the cart keeps its lines plus a log of the cart operations within the allowed lateness (so
  that a late cart event is replayed in time order); older operations are folded into ``base``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any

SERIES_CAP = 4096
RATE_CAP = 10_000  # events per customer within the allowed lateness; past it: refused
PENDING_CAP = 256
NEVER = 1 << 62  # "no due instant"

Event = dict[str, Any]
#: what the state remembers of a recent event: (event time, type, properties as a flat
#: ``(name, value, name, value, ...)`` tuple or None): a tuple costs a third of a dict
Record = tuple[int, str, tuple[Any, ...] | None]


def record_props(rec: Record) -> dict[str, Any]:
    """The properties kept in a record, as the event's properties dict.

    >>> record_props((0, "purchase", ("amount", 5.0, "order_id", "o1")))
    {'amount': 5.0, 'order_id': 'o1'}
    """
    flat = rec[2]
    if not flat:
        return {}
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}

# cart operation kinds
OP_ADD, OP_REMOVE, OP_CLEAR = 0, 1, 2
#: cart operations kept in the log since the last purchase before the oldest are folded into
#: the cart's base (an alias merge unites folded lines line by line instead of replaying them)
CART_LOG_CAP = 64


class SeriesState:
    """Events of one series: last/first instants, windowed timestamps (+ values), hours."""

    __slots__ = ("first", "hours", "key", "last", "props", "ts", "vals")

    def __init__(self, key: int, props: tuple[str, ...], hours: bool) -> None:
        self.key = key  # stable hash of the series' canonical text
        self.props = props  # names of the summed/averaged properties kept in vals
        self.last: int | None = None
        self.first: int | None = None
        self.ts: list[int] = []  # sorted event times within the retention window
        self.vals: list[list[float | None]] = [[] for _ in props]  # parallel to ts
        self.hours: list[int] | None = [0] * 24 if hours else None

    def drop_before(self, horizon: int) -> None:
        """Forget windowed events with ``ts <= horizon`` (no window at or after the clock
        can contain them)."""
        ts = self.ts
        if ts and ts[0] <= horizon:
            k = bisect_right(ts, horizon)
            del ts[:k]
            for v in self.vals:
                del v[:k]

    def cap(self) -> None:
        extra = len(self.ts) - SERIES_CAP
        if extra > 0:
            del self.ts[:extra]
            for v in self.vals:
                del v[:extra]


SEQ_CAP = 1024  # events kept per sequence (docs/time-semantics.md, "State bounds")


class SeqState:
    """One positive sequence (``A then B ... within T [on P]``) of one customer.

    ``done`` is the latest completion instant (None: none yet). ``ts``/``vals``/``masks`` are
    the recent events matching some step, sorted by time: ``masks[k]`` has bit ``s`` set when
    event ``k`` matches step ``s``, ``vals[k]`` is its ``on`` property (None without ``on``).
    Only events that a later (or late) event can still complete a chain with are kept
    (``processors.sequences``): within ``T`` + the allowed lateness of the clock, final-step-only
    ones within the lateness, at most ``SEQ_CAP``.
    """

    __slots__ = ("done", "key", "masks", "ts", "vals")

    def __init__(self, key: int) -> None:
        self.key = key
        self.done: int | None = None
        self.ts: list[int] = []
        self.vals: list[Any] = []
        self.masks: list[int] = []


class CartLine:
    """One product in the cart: quantity, latest cart_add price, instant of the last change."""

    __slots__ = ("price", "qty", "ts")

    def __init__(self, qty: int, price: float, ts: int) -> None:
        self.qty = qty
        self.price = price
        self.ts = ts

    def copy(self) -> CartLine:
        return CartLine(self.qty, self.price, self.ts)


CartOp = tuple[int, int, str, int | None, float]  # (ts, kind, product_id, quantity, price)


def _apply_op(lines: dict[str, CartLine], op: CartOp) -> None:
    ts, kind, pid, qty, price = op
    if kind == OP_ADD:
        line = lines.get(pid)
        if line is None:
            lines[pid] = CartLine(qty or 1, price, ts)
        else:
            line.qty += qty or 1
            line.price = price
            line.ts = ts
    elif kind == OP_REMOVE:
        line = lines.get(pid)
        if line is not None:
            if qty is None or line.qty - qty <= 0:
                del lines[pid]
            else:
                line.qty -= qty
                line.ts = ts
    else:
        lines.clear()


class CartState:
    """The cart, replayable in event-time order within the allowed lateness.

    ``lines`` is the current cart (all operations applied in (timestamp, arrival) order);
    ``base`` the cart before the first operation still in ``log``. The log holds every
    operation since the latest purchase older than the lateness horizon (that purchase first),
    at most ``CART_LOG_CAP`` of them once older than the horizon: what an alias merge needs to
    replay both profiles' carts interleaved.
    """

    __slots__ = ("_items", "_value", "base", "cleared", "last_change", "lines", "log")

    def __init__(self) -> None:
        self.lines: dict[str, CartLine] = {}
        self.base: dict[str, CartLine] = {}
        self.log: list[CartOp] = []
        self.last_change: int | None = None
        self.cleared: int | None = None  # instant of the latest purchase (used by merges)
        self._items: int | None = None  # cached totals (None: recompute)
        self._value: float | None = None

    def apply(self, op: CartOp, horizon: int) -> None:
        """Apply ``op``; an op older than the last logged one is inserted and the cart replayed.
        Ops older than ``horizon`` (no accepted event can precede them) are dropped when a
        purchase older than ``horizon`` follows them, or folded into base beyond the cap
        (:meth:`fold`)."""
        ts = op[0]
        log = self.log
        self._items = self._value = None
        if not log or ts >= log[-1][0]:
            log.append(op)
            _apply_op(self.lines, op)
        else:
            log.insert(bisect_right([o[0] for o in log], ts), op)
            lines = {k: v.copy() for k, v in self.base.items()}
            for o in log:
                _apply_op(lines, o)
            self.lines = lines
        if self.last_change is None or ts > self.last_change:
            self.last_change = ts
        if op[1] == OP_CLEAR and (self.cleared is None or ts > self.cleared):
            self.cleared = ts
        cleared = self.cleared
        if log[0][0] < horizon and (len(log) > CART_LOG_CAP or (
                cleared is not None and log[0][0] < cleared < horizon)):
            self.fold(horizon)

    def fold(self, horizon: int) -> None:
        """Drop what no accepted event can change any more: the operations before the latest
        purchase older than ``horizon`` (the purchase stays first in the log, so that an alias
        merge replays it against the other profile's earlier operations), then, while the log
        is longer than ``CART_LOG_CAP``, fold its oldest operations older than ``horizon``
        into ``base``."""
        log = self.log
        k = 0
        last_clear = -1
        while k < len(log) and log[k][0] < horizon:
            if log[k][1] == OP_CLEAR:
                last_clear = k
            k += 1
        if last_clear > 0:
            del log[:last_clear]
            self.base = {}
        n = 0
        while len(log) - n > CART_LOG_CAP and log[n][0] < horizon:
            _apply_op(self.base, log[n])
            n += 1
        del log[:n]

    def rebuild(self) -> None:
        """Recompute ``lines`` from ``base`` and ``log`` (after decoding)."""
        lines = {k: v.copy() for k, v in self.base.items()}
        for o in self.log:
            _apply_op(lines, o)
        self.lines = lines
        self._items = self._value = None

    def set_lines(self, lines: dict[str, CartLine]) -> None:
        self.lines = lines
        self._items = self._value = None

    def items(self) -> int:
        """Total quantity in the cart."""
        if self._items is None:
            self._items = sum(line.qty for line in self.lines.values())
        return self._items

    def value(self) -> float:
        """Sum of quantity x price over the lines (fsum: independent of the lines' order)."""
        if self._value is None:
            self._value = math.fsum(line.qty * line.price for line in self.lines.values())
        return self._value


def exact_add(partials: list[float], x: float) -> None:
    """Add ``x`` to the exact sum held in ``partials`` (Shewchuk's non-overlapping partials,
    as in ``math.fsum``): ``math.fsum(partials)`` is then the correctly rounded exact sum of
    everything added, so the result never depends on the order of the additions.

    >>> p: list[float] = []
    >>> for x in (0.3, 0.2, 0.1): exact_add(p, x)
    >>> q: list[float] = []
    >>> for x in (0.1, 0.2, 0.3): exact_add(q, x)
    >>> math.fsum(p) == math.fsum(q) == 0.6
    True
    """
    i = 0
    for p in partials:
        big, small = (p, x) if abs(x) < abs(p) else (x, p)
        hi = big + small
        lo = small - (hi - big)
        if lo:
            partials[i] = lo
            i += 1
        x = hi
    partials[i:] = [x]


class CustomerState:
    """Everything the engine keeps about one customer (routing id ``cid``).

    ``series``, ``versions`` and ``due`` are positional in the compiled catalogue the state is
    bound to (``layout``); versions of segments that left the catalogue stay in ``orphans`` so
    a segment added back continues its version counter.
    """

    __slots__ = (
        "cart",
        "cid",
        "clock",
        "due",
        "due_min",
        "erased",
        "fresh",
        "layout",
        "orphans",
        "p_count",
        "p_first",
        "p_last",
        "p_sum",
        "p_total",
        "pending",
        "seen",
        "seqs",
        "series",
        "traits",
        "versions",
    )

    def __init__(self, cid: str, clock: int) -> None:
        self.cid = cid
        self.clock = clock  # the instant up to which memberships are evaluated
        self.layout: Any = None  # the CompiledCatalogue this state is bound to (None: unbound)
        self.series: list[SeriesState] = []
        self.seqs: list[SeqState] = []  # per sequence of the layout (positional, like series)
        self.versions: list[int] = []  # per segment; odd = member
        self.orphans: dict[str, int] = {}  # versions of segments not in the layout
        self.due: list[int] = []  # per segment: next instant its value may change, or NEVER
        self.due_min = NEVER
        self.cart: CartState | None = None
        self.p_count = 0  # lifetime purchases
        self.p_total: float = 0.0  # == math.fsum(p_sum): the correctly rounded exact total
        self.p_sum: list[float] = []  # exact sum of the amounts as non-overlapping partials
        self.p_first: int | None = None
        self.p_last: int | None = None
        self.traits: dict[str, list[Any]] = {}  # name -> [value, ts of the identify that set it]
        # event id hash -> (event time, type, properties), insertion (arrival) ordered
        self.seen: dict[int, Record] = {}
        self.erased = -NEVER  # a forget erased every event with time <= this instant
        self.pending: list[tuple[int, Event]] = []  # ahead-of-clock events, sorted by time
        self.fresh = False  # True until the first event is evaluated (then all segments are)

    def add_amount(self, x: float) -> None:
        """Add ``x`` to the lifetime purchase total exactly (order never matters)."""
        exact_add(self.p_sum, x)
        self.p_total = math.fsum(self.p_sum)

    def all_versions(self) -> dict[str, int]:
        """Segment name -> version, for every segment this customer ever changed in."""
        out = dict(self.orphans)
        if self.layout is not None and not isinstance(self.layout, int):
            out.update((n, v) for n, v in zip(self.layout.names, self.versions, strict=True) if v)
        return out

    def segments(self) -> list[str]:
        """Names of the segments the customer is in (odd version)."""
        return sorted(name for name, v in self.all_versions().items() if v & 1)

    def forget_seen_before(self, horizon: int) -> None:
        """Drop the records of events older than ``horizon`` (oldest arrivals first: a record
        behind a newer arrival goes when that one does, at most one lateness later)."""
        seen = self.seen
        while seen:
            k = next(iter(seen))
            if seen[k][0] >= horizon:
                break
            del seen[k]
