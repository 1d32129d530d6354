"""Custom event types at runtime: the document on the event-types topic, the live types of a
process, and the follower that keeps them current.

``segstream types apply FILE`` checks an event-types file and publishes it as one record (key
``types``) on the compacted, single-partition event-types topic, like definitions
(:mod:`stream.definitions`). Every process that validates or loads definitions (the ingest and
segmentation agents of a worker, the collector) starts with ``SEGSTREAM_TYPES_FILE`` and then
follows the topic: a document whose ``version`` differs from the running one replaces the
types without a restart (:class:`LiveTypes`). A change that breaks a loaded definition is
refused by ``types apply`` (:func:`breaking_changes`), naming the segment.

The document::

    {"version": "2026-12-06.1", "text": "<the YAML file>", "published_at": 1795400000000}
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from processors.lang import ast
from processors.lang.errors import DefinitionError
from processors.lang.load import load_definitions
from processors.lang.typesfile import load_types
from schemas.errors import SegstreamError
from schemas.eventtypes import EventTypes
from schemas.validation import Schema
from stream.definitions import decode_document, encode_document
from stream.settings import Settings

log = logging.getLogger(__name__)
DOCUMENT_KEY = b"types"
TYPES_PARTITION = 0


class TypesDocError(SegstreamError, ValueError):
    """An event-types-topic record that is not an event-types document."""


@dataclass(frozen=True, slots=True)
class TypesDoc:
    """One published event-types file."""

    version: str
    text: str
    published_at: int

    def encode(self) -> bytes:
        return encode_document(self.version, self.text, self.published_at)

    @classmethod
    def decode(cls, data: bytes) -> TypesDoc:
        return cls(*decode_document(data, "event-types", TypesDocError))

    @classmethod
    def of_text(cls, text: str, name: str | None = None) -> tuple[TypesDoc, EventTypes]:
        """Check ``text`` (raises ``DefinitionError``, citing ``name``) and wrap it."""
        types = load_types(text, name=name)
        return cls(types.version, text, time.time_ns() // 1_000_000), types

    def types(self) -> EventTypes:
        return load_types(self.text)


# --- what a definition uses, and the changes that break it --------------------------------------
def _events_of(node: ast.Expr) -> list[tuple[ast.EventSet, str | None]]:
    """The event sets of ``node`` (with the aggregated property of sum/avg), recursively."""
    out: list[tuple[ast.EventSet, str | None]] = []
    stack = [node]
    while stack:
        n = stack.pop()
        match n:
            case ast.Aggregate():
                out.append((n.events, None if n.prop_extra else n.prop))
            case ast.Instant() | ast.Since() | ast.HourShare():
                out.append((n.events, None))
            case ast.ThenNo():
                out += [(n.first, None), (n.then, None)]
            case ast.Completion():
                on = None if n.seq.on_extra else n.seq.on
                out += [(es, on) for es in n.seq.steps]
        stack.extend(ast.subexpressions(n))
    return out


def _props_of(node: ast.Expr | None) -> set[str]:
    if node is None:
        return set()
    if isinstance(node, ast.PropRef):
        return set() if node.extra else {node.name}
    return set().union(*(_props_of(c) for c in ast.subexpressions(node)))


def uses(segment: ast.SegmentDef) -> set[tuple[str, str | None]]:
    """(type, property) pairs the segment's condition reads; (type, None) for the type."""
    out: set[tuple[str, str | None]] = set()
    for es, prop in _events_of(segment.condition):
        props = _props_of(es.filter) | ({prop} if prop else set())
        for t in es.types:
            out.add((t, None))
            out.update((t, p) for p in props)
    return out


def breaking_changes(old: EventTypes | None, new: EventTypes | None,
                     catalogue: ast.Catalogue) -> list[str]:
    """Why replacing the types ``old`` by ``new`` breaks segments of ``catalogue`` (empty when
    compatible): a custom type or property a segment uses is removed, or its kind changes."""
    problems: list[str] = []
    for seg in catalogue.segments:
        for t, p in sorted(uses(seg), key=lambda u: (u[0], u[1] or "")):
            before = old.get(t) if old is not None else None
            if before is None:
                continue  # a built-in type
            after = new.get(t) if new is not None else None
            if after is None:
                if p is None:
                    problems.append(f"segment '{seg.name}' uses type {t}, which the new file "
                                    "removes")
                continue
            if p is None or p not in before.properties:
                continue
            if p not in after.properties:
                problems.append(f"segment '{seg.name}' uses {t}.{p}, which the new file removes")
            elif after.properties[p].kind != before.properties[p].kind:
                problems.append(f"segment '{seg.name}' uses {t}.{p}: its kind changes from "
                                f"{before.properties[p].kind} to {after.properties[p].kind}")
    if not problems:
        try:
            load_definitions(_catalogue_text(catalogue), types=new)
        except DefinitionError as err:
            problems.append(str(err).splitlines()[0])
    return problems


def _catalogue_text(catalogue: ast.Catalogue) -> str:
    return orjson.dumps({"version": catalogue.version, "segments": [
        {"name": s.name, "description": s.description or "-", "condition": s.condition_text}
        for s in catalogue.segments]}).decode()


# --- the live types of a process ----------------------------------------------------------------
class LiveTypes:
    """The custom types a process runs with: ``SEGSTREAM_TYPES_FILE`` at start, then the
    latest published document (:meth:`follow`). ``schema`` is what validation uses now."""

    def __init__(self, settings: Settings, types: EventTypes | None = None) -> None:
        self.settings = settings
        self.ready = asyncio.Event()  # set once the topic was read to its end
        self.followed = False  # a follow() task is (or will be) running: wait for ready
        self.errors = 0
        #: awaited after each switch to new types (the segmentation agent retries definitions
        #: it refused for lack of a custom type)
        self.listeners: list[Callable[[], Awaitable[None]]] = []
        self.set(types)

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveTypes:
        """The file's types (raises ``DefinitionError`` for a bad file)."""
        path = settings.ingest.types_file
        return cls(settings, load_types(Path(path)) if path else None)

    def set(self, types: EventTypes | None) -> None:
        self.types = types
        self.version = types.version if types is not None else None
        self.schema = Schema(types)

    def apply(self, record: bytes) -> bool:
        """Switch to the document in ``record``; False (counted, logged) when it is unusable."""
        try:
            doc = TypesDoc.decode(record)
            if doc.version == self.version:
                return True
            types = doc.types()
        except (TypesDocError, DefinitionError) as err:
            self.errors += 1
            log.error("ignoring an event-types record: %s", err)
            return False
        self.set(types)
        log.info("event types %s: %s", types.version, ", ".join(types.names) or "(none)")
        return True

    async def follow(self) -> None:
        """Follow the event-types topic forever (a task); failures are retried."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                log.exception("reading the event-types topic failed; retrying in 2 s")
                await asyncio.sleep(2.0)

    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415

        from stream.connections import kafka_kwargs  # noqa: PLC0415

        await _ensure_topic(self.settings)
        tp = TopicPartition(self.settings.topic("types"), TYPES_PARTITION)
        consumer = AIOKafkaConsumer(**kafka_kwargs(self.settings),
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            latest: bytes | None = None
            while True:
                batches = await consumer.getmany(tp, timeout_ms=1000)
                values = [r.value for r in batches.get(tp, ()) if r.value is not None]
                latest = values[-1] if values else latest
                if not self.ready.is_set() and await consumer.position(tp) < end:
                    continue  # still catching up: only the last document matters
                if latest is not None:
                    before = self.version
                    if self.apply(latest) and self.version != before:
                        for listener in self.listeners:
                            await listener()
                    latest = None
                self.ready.set()
        finally:
            await consumer.stop()


async def _ensure_topic(settings: Settings) -> None:
    """Create the event-types topic when missing (best effort, like the collector's raw
    topic: a worker also declares it, production may provision it)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError  # noqa: PLC0415

    from stream.connections import kafka_kwargs  # noqa: PLC0415
    from stream.topics import topic_spec  # noqa: PLC0415

    spec = topic_spec(settings, "types")
    admin = AIOKafkaAdminClient(**kafka_kwargs(settings))
    try:
        await admin.start()
        if spec.name not in await admin.list_topics():
            await admin.create_topics([NewTopic(spec.name, spec.partitions, spec.replication,
                                                topic_configs=spec.configs())])
    except TopicAlreadyExistsError:
        pass
    except KafkaError as err:
        log.warning("cannot create the event-types topic %s: %s", spec.name, err)
    finally:
        await admin.close()


def publish_types(settings: Settings, doc: TypesDoc, timeout_ms: int = 15_000) -> None:
    """Produce ``doc`` (acks=all) on the event-types topic (created when missing) and wait for
    the acknowledgement."""
    from kafka import KafkaProducer  # noqa: PLC0415

    from stream.connections import kafka_kwargs  # noqa: PLC0415
    from stream.topics import create_topics, topic_spec  # noqa: PLC0415

    create_topics(kafka_kwargs(settings), [topic_spec(settings, "types")],
                  request_timeout_ms=timeout_ms)

    producer = KafkaProducer(**kafka_kwargs(settings), acks="all",
                             request_timeout_ms=timeout_ms)
    try:
        producer.send(settings.topic("types"), doc.encode(), key=DOCUMENT_KEY).get(
            timeout=timeout_ms / 1000)
    finally:
        producer.close()
