"""The project's error root, the error codes of rejected events, and the exception that
carries one.

Every exception segstream defines derives from :class:`SegstreamError` (and, where it always
did, from a builtin such as ``ValueError``, so ``except ValueError`` callers keep working).
``retriable`` says whether the same operation may succeed if tried again (aiokafka's
``errors.py`` is the model): False on the root, True on the subclasses that mean "transient".
Third-party exceptions that are transient (Redis connection loss, failover) are listed in one
place, ``stream.errors``, which also answers :func:`stream.errors.is_retriable` for any exception.

Every rejected event is dead-lettered with exactly one :class:`ErrorCode` (a snake_case string,
stable: dashboards and alerts key on it) and a human message that names the offending field.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class SegstreamError(Exception):
    """The root of every exception segstream defines.

    >>> issubclass(InvalidEvent, SegstreamError), InvalidEvent.retriable
    (True, False)
    """

    #: whether the failed operation may succeed when tried again (class-wide, never per instance)
    retriable: ClassVar[bool] = False


class RetriableError(SegstreamError):
    """A transient failure: the same operation may succeed when tried again."""

    retriable: ClassVar[bool] = True


class ErrorCode(StrEnum):
    """Why an event (or a whole raw record) was rejected. The values are the wire strings."""

    #: the record is not JSON: syntax error, invalid UTF-8, NaN/Infinity, empty or null value
    UNPARSABLE = "unparsable"
    #: the record, or an element of the record's array, is not a JSON object
    NOT_OBJECT = "not_object"
    #: ``type`` is missing, not a string, or not one of the 13 event types nor a declared custom
    #: type; the message names the nearest type
    UNKNOWN_TYPE = "unknown_type"
    #: ``event_id`` is missing or null
    MISSING_ID = "missing_id"
    #: ``event_id``, ``customer_id`` or ``anonymous_id`` is not a string, is empty, longer than
    #: 128 characters or holds a control character
    BAD_ID = "bad_id"
    #: ``timestamp`` is missing, a float, a bool, or not an RFC 3339 string with an offset
    BAD_TIMESTAMP = "bad_timestamp"
    #: ``timestamp`` is before ``Limits.min_timestamp_ms`` or after now + ``max_future_ms``
    ABSURD_TIMESTAMP = "absurd_timestamp"
    #: ``properties`` is not an object, misses a required property, has a property of the wrong
    #: type or out of bounds, uses a reserved (envelope) name, or an extra property is too long
    #: or too deeply nested
    BAD_PROPERTIES = "bad_properties"
    #: a declared property of a *custom* event type (a types file) is missing while required,
    #: of the wrong kind, out of min/max or not one of an enum's values; the message names the
    #: property and the expected kind
    BAD_PROPERTY = "bad_property"
    #: neither ``customer_id`` nor ``anonymous_id`` is set (an ``alias`` needs both)
    MISSING_ROUTING_ID = "missing_routing_id"
    #: the event is larger than ``max_event_bytes`` or the record than ``max_record_bytes``
    OVERSIZED = "oversized"
    #: the record's array holds more than ``max_events_per_record`` events
    TOO_MANY_EVENTS = "too_many_events"
    #: another envelope field is wrong: ``source`` not a 1..128-character string,
    #: ``schema_version`` not 1, or an ``alias`` whose two ids are equal
    BAD_ENVELOPE = "bad_envelope"
    #: set by the segmentation worker, not by validation: the event is older than
    #: now - allowed_lateness and was not applied
    TOO_LATE = "too_late"
    #: set by the segmentation worker, not by validation: the customer already has
    #: ``state.model.RATE_CAP`` events within the allowed lateness (a flood, a bot); the event
    #: was not applied
    RATE_LIMITED = "rate_limited"
    #: set by the agents, not by validation: processing a valid event failed unexpectedly (a
    #: bug); the event is dead-lettered with the exception text instead of stopping the stream
    INTERNAL_ERROR = "internal_error"
    #: set by the segmentation worker, not by validation: a record of the bundles topic could
    #: not be decoded (not written by the ingest agent, or corrupted); it is skipped
    BAD_BUNDLE = "bad_bundle"


class InvalidEvent(SegstreamError):  # noqa: N818 - the name is the public API the callers use
    """An event failed validation: ``code`` says why, ``message`` names the field."""

    __slots__ = ("code", "message")

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
