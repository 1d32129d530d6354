"""The Kafka topics of segstream: one table of specs (:func:`topic_specs`) that every creator uses.

Every topic is described once here — name (setting), partitions, replication, cleanup policy,
retention — and created from that description by whoever creates it: the worker at start-up (Faust:
:func:`stream.worker.faust_adapter.declare_topics`), ``segstream segments apply`` (the definitions
topic), ``segstream collector`` (the raw topic, local runs), the tests' fixtures and the benchmarks
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
from typing import Any

from stream.settings import Settings, TopicRole

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
        return TopicSpec(role, settings.topic(role), partitions, settings.topics.replication_factor,
                         compacted=compacted)

    return {
        "raw": spec("raw", settings.topics.raw_partitions),
        "bundles": spec("bundles", settings.topics.bundle_partitions),
        "deadletters": spec("deadletters", settings.topics.deadletter_partitions),
        "changes": spec("changes", settings.topics.changes_partitions),
        # One partition, compacted: the documents are totally ordered and the latest one (key
        # "catalogue", see stream.definitions) is all a worker needs.
        "definitions": spec("definitions", 1, compacted=True),
        # the same for the custom event types (key "types", see stream.eventtypes)
        "types": spec("types", 1, compacted=True),
    }


def topic_spec(settings: Settings, role: TopicRole) -> TopicSpec:
    """The spec of the topic with *role* (see :func:`topic_specs`)."""
    return topic_specs(settings)[role]


def create_topics(kafka_options: Mapping[str, Any], specs: Sequence[TopicSpec], *,
                  exist_ok: bool = True, extra_configs: Mapping[str, str] | None = None,
                  request_timeout_ms: int = 30_000) -> None:
    """Create *specs* with kafka-python's admin client (blocking; short-lived commands, tests,
    benchmarks). ``kafka_options``: :func:`stream.connections.kafka_kwargs` (with the security
    options; tests and benchmarks on the local broker: ``{"bootstrap_servers": ...}``);
    ``extra_configs`` are added to every topic's (tests). With ``exist_ok``, a topic that
    already exists is left as it is."""
    from kafka import KafkaAdminClient  # noqa: PLC0415 - keep `segstream --help` fast
    from kafka.admin import NewTopic  # noqa: PLC0415
    from kafka.errors import TopicAlreadyExistsError  # noqa: PLC0415

    admin = KafkaAdminClient(**kafka_options, request_timeout_ms=request_timeout_ms)
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
