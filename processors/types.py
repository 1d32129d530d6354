"""The engine's outputs: segment changes and the result of one engine step."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from state.model import CustomerState

Action = Literal["enter", "exit"]
_KEEP: Any = object()  # Step._replace: the field is kept


class Change(NamedTuple):
    """One membership change of ``customer_id`` in ``segment``.

    ``at`` is the instant of the change in event time (an event's timestamp or a due instant),
    never the wall clock, so re-processing gives identical changes. ``version`` counts the
    changes of (customer, segment): odd versions are ENTER, even ones EXIT. ``cause`` is the
    event id, ``"timer"``, ``"alias:<event_id>"``, ``"forget:<event_id>"`` or
    ``"definitions:<version>"``.
    """

    customer_id: str
    segment: str
    action: Action
    at: int
    version: int
    cause: str


class Step:
    """Result of one engine call: the new state (None once erased or merged away), the changes
    in order, the next instant the state needs a look (None: never), and whether the event
    was refused (not applied): ``reason`` then says why, ``too_late`` (older than now -
    allowed lateness) or ``rate_limited`` (the customer already has ``state.model.RATE_CAP``
    events within the allowed lateness).

    A plain class, not a NamedTuple: one is made per event, and a compiled class is built
    without the interpreted ``__new__`` of a named tuple (perf of a replay: the named tuple's
    constructor was the one interpreted frame left per event)."""

    __slots__ = ("changes", "late", "next_due", "reason", "state")

    def __init__(self, state: CustomerState | None, changes: list[Change],
                 next_due: int | None, late: bool, reason: str = "") -> None:
        self.state = state
        self.changes = changes
        self.next_due = next_due
        self.late = late
        self.reason = reason

    def _replace(self, *, state: Any = _KEEP, next_due: Any = _KEEP) -> Step:
        """A copy with ``state`` and/or ``next_due`` replaced (like a named tuple's)."""
        return Step(self.state if state is _KEEP else state, self.changes,
                    self.next_due if next_due is _KEEP else next_due, self.late, self.reason)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Step):
            return NotImplemented
        return (self.state, self.changes, self.next_due, self.late, self.reason) == (
            other.state, other.changes, other.next_due, other.late, other.reason)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the named tuple's lists

    def __repr__(self) -> str:
        return (f"Step(state={self.state!r}, changes={self.changes!r}, "
                f"next_due={self.next_due!r}, late={self.late!r}, reason={self.reason!r})")
