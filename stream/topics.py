"""The Kafka topics of a segstream app, with the names and partition counts from the settings.

All values and keys are raw ``bytes`` (Faust's ``raw`` codec): the payload codecs live in
``schemas`` (bundles, dead letters, changes) and stay independent of Faust. Every topic is marked
``internal`` so that a worker creates it (if missing) before it subscribes or produces; the raw
topic is created by the worker only for local runs and tests — in production it is provisioned
with the partitions the websites' traffic needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import faust
from faust.types import TopicT

from stream.settings import Settings


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
    """Describe the app's topics (no I/O: Faust creates them when the worker starts)."""

    def topic(name: str, partitions: int, *, compacting: bool | None = None,
              buffer: int | None = None) -> TopicT:
        # app.conf.Topic, not app.topic(): faust-streaming 0.15 accepts app.topic(maxsize=...)
        # but does not pass it on
        return cast(TopicT, app.conf.Topic(
            app,
            topics=[name],
            partitions=partitions,
            replicas=settings.replication_factor,
            key_serializer="raw",
            value_serializer="raw",
            internal=True,
            compacting=compacting,
            maxsize=buffer,  # the agent's stream buffer (records); None: Faust's 4096
        ))

    # Stream buffers of two batches (not Faust's 4096 records: 4096 full bundles are ~1 GB), so
    # a backlog stays in Kafka, not in the worker (docs/operations.md, Overload).
    return Topics(
        raw=topic(settings.topic("raw"), settings.raw_partitions,
                  buffer=2 * settings.ingest_batch_records),
        bundles=topic(settings.topic("bundles"), settings.bundle_partitions,
                      buffer=2 * settings.segment_batch_records),
        deadletters=topic(settings.topic("deadletters"), settings.deadletter_partitions),
        changes=topic(settings.topic("changes"), settings.changes_partitions),
        # One partition, compacted: the documents are totally ordered and the latest one (key
        # "catalogue", see stream.definitions) is all a worker needs.
        definitions=topic(settings.topic("definitions"), 1, compacting=True),
    )

