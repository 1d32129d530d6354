"""The engine's outputs: segment changes and the result of one engine step."""

from __future__ import annotations

from typing import Literal, NamedTuple

from state.model import CustomerState

Action = Literal["enter", "exit"]


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


class Step(NamedTuple):
    """Result of one engine call: the new state (None once erased or merged away), the changes
    in order, the next instant the state needs a look (None: never), and whether the event
    was refused (not applied): ``reason`` then says why, ``too_late`` (older than now -
    allowed lateness) or ``rate_limited`` (the customer already has ``state.model.RATE_CAP``
    events within the allowed lateness)."""

    state: CustomerState | None
    changes: list[Change]
    next_due: int | None
    late: bool
    reason: str = ""
