"""The Kafka topics of segstream: one table of specs (:func:`topic_specs`) that every creator uses.

Every topic is described once here — name (setting), partitions, replication, cleanup policy,
retention — and created from that description by whoever creates it: the worker at start-up
(Faust, :func:`declare_topics`), ``segstream segments apply`` (the definitions topic),
``segstream collector`` (the raw topic, local runs), the tests' fixtures and the benchmarks
(:func:`create_topics`). The raw topic is created by the worker or the collector only for local
runs and tests — in production it is provisioned with the partitions the websites' traffic needs.

All values and keys are raw ``bytes`` (Faust's ``raw`` codec): the payload codecs live in
``schemas`` (bundles, dead letters, changes) and stay independent of Faust. No Kafka client is
imported at module level (``segstream --help`` stays fast).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from stream.settings import Settings, TopicRole

if TYPE_CHECKING:
    import faust
    from faust.types import TopicT

#: The definitions topic's one partition (documents are totally ordered).
DEFINITIONS_PARTITION = 0


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as Kafka should hold it."""

    role: TopicRole
    name: str  # full name, prefix included
    partitions: int
    replication: int
    compacted: bool = False  # cleanup.policy=compact (else the broker's default: delete)
    retention_ms: int | None = None  # None: the broker's default retention

    def configs(self) -> dict[str, str]:
        """The topic-level configs to create it with (only those that differ from defaults)."""
        configs: dict[str, str] = {}
        if self.compacted:
            configs["cleanup.policy"] = "compact"
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return configs

    def resized(self, partitions: int) -> TopicSpec:
        """The same topic with another partition count (tests and benchmarks)."""
        return dataclasses.replace(self, partitions=partitions)


def topic_specs(settings: Settings) -> dict[TopicRole, TopicSpec]:
    """THE table: every segstream topic, by role, for *settings*."""

    def spec(role: TopicRole, partitions: int, *, compacted: bool = False) -> TopicSpec:
        return TopicSpec(role, settings.topic(role), partitions, settings.replication_factor,
                         compacted=compacted)

    return {
        "raw": spec("raw", settings.raw_partitions),
        "bundles": spec("bundles", settings.bundle_partitions),
        "deadletters": spec("deadletters", settings.deadletter_partitions),
        "changes": spec("changes", settings.changes_partitions),
        # One partition, compacted: the documents are totally ordered and the latest one (key
        # "catalogue", see stream.definitions) is all a worker needs.
        "definitions": spec("definitions", 1, compacted=True),
    }


def topic_spec(settings: Settings, role: TopicRole) -> TopicSpec:
    """The spec of the topic with *role* (see :func:`topic_specs`)."""
    return topic_specs(settings)[role]


def create_topics(client_kwargs: Mapping[str, Any], specs: Sequence[TopicSpec], *,
                  exist_ok: bool = True, extra_configs: Mapping[str, str] | None = None,
                  request_timeout_ms: int = 30_000) -> None:
    """Create *specs* with kafka-python's admin client (blocking; short-lived commands, tests,
    benchmarks). ``client_kwargs``: e.g. :func:`stream.connections.kafka_kwargs` or
    ``{"bootstrap_servers": ...}``; ``extra_configs`` are added to every topic's (tests).
    With ``exist_ok``, a topic that already exists is left as it is."""
    from kafka import KafkaAdminClient  # noqa: PLC0415 - keep `segstream --help` fast
    from kafka.admin import NewTopic  # noqa: PLC0415
    from kafka.errors import TopicAlreadyExistsError  # noqa: PLC0415

    admin = KafkaAdminClient(**client_kwargs, request_timeout_ms=request_timeout_ms)
    try:
        for spec in specs:  # one request each: one existing topic must not hide the others
            try:
                admin.create_topics([NewTopic(spec.name, spec.partitions, spec.replication,
                                              topic_configs={**spec.configs(),
                                                             **(extra_configs or {})})])
            except TopicAlreadyExistsError:
                if not exist_ok:
                    raise
    finally:
        admin.close()


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics one app uses (Faust topic descriptions, not connections)."""

    raw: TopicT
    bundles: TopicT
    deadletters: TopicT
    changes: TopicT
    definitions: TopicT

    def all(self) -> tuple[TopicT, ...]:
        """Every topic, in declaration order."""
        return (self.raw, self.bundles, self.deadletters, self.changes, self.definitions)


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    """Describe the app's topics from the table (no I/O: Faust creates them, when missing, when
    the worker starts: every topic is ``internal``)."""
    specs = topic_specs(settings)

    def topic(role: TopicRole, buffer: int | None = None) -> TopicT:
        spec = specs[role]
        # app.conf.Topic, not app.topic(): faust-streaming 0.15 accepts app.topic(maxsize=...)
        # but does not pass it on
        return cast("TopicT", app.conf.Topic(
            app,
            topics=[spec.name],
            partitions=spec.partitions,
            replicas=spec.replication,
            key_serializer="raw",
            value_serializer="raw",
            internal=True,
            compacting=True if spec.compacted else None,
            retention=None if spec.retention_ms is None else spec.retention_ms / 1000.0,
            maxsize=buffer,  # the agent's stream buffer (records); None: Faust's 4096
        ))

    # Stream buffers of two batches (not Faust's 4096 records: 4096 full bundles are ~1 GB), so
    # a backlog stays in Kafka, not in the worker (docs/operations.md, Overload).
    return Topics(
        raw=topic("raw", buffer=2 * settings.ingest_batch_records),
        bundles=topic("bundles", buffer=2 * settings.segment_batch_records),
        deadletters=topic("deadletters"),
        changes=topic("changes"),
        definitions=topic("definitions"),
    )
