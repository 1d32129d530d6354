"""The Faust app factory: ``create_app(settings)`` wires topics, agents, sensors and /metrics.

Nothing happens at import time and nothing connects in the factory: Faust connects when a worker
starts the app. Faust is given ``env={}`` so that it reads no environment variables of its own
(``WEB_PORT``, ``BROKER_URL``...): :class:`stream.settings.Settings` is the only configuration.

The producer is idempotent with ``acks=all`` (:class:`IdempotentProducer`): the ingest agent's
at-least-once invariant relies on an acknowledged bundle being durable, and on retries neither
duplicating nor reordering the bundles of a partition.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducer
from faust.types import ProducerT
from prometheus_client import CollectorRegistry

from stream.connections import KafkaSecurity, kafka_security, redis_auth_problem
from stream.settings import Settings, SettingsError
from stream.topics import Topics, declare_topics
from stream.worker.agents import attach_agents
from stream.worker.api import API_MAX_BODY_BYTES, MembershipApi, attach_api
from stream.worker.metrics import IngestMetrics, PartitionLag

if TYPE_CHECKING:
    from stream.worker.agents.ingest import IngestAgent

log = logging.getLogger(__name__)

#: Kafka's default ``message.max.bytes`` (what a broker accepts in one record batch).
BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024


class IdempotentProducer(AIOKafkaProducer):
    """Faust's aiokafka producer with ``enable_idempotence=True`` and ``acks=all``.

    Faust only turns idempotence on inside transactions (``_settings_extra``); we want it for
    every send: a retried produce request can then neither duplicate nor reorder records.
    """

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class SegstreamApp(faust.App):
    """``faust.App`` plus the segstream wiring (settings, topics, metrics) as attributes."""

    settings: Settings
    segstream_topics: Topics
    metrics_registry: CollectorRegistry
    ingest_metrics: IngestMetrics
    partition_lag: PartitionLag  # segstream_partition_lag, set by each agent
    ingest: IngestAgent  # set when the ingest agent is attached
    membership_api: MembershipApi

    def _new_producer(self) -> ProducerT:
        return IdempotentProducer(self.transport, loop=self.loop, beacon=self.beacon)


def broker_credentials(security: KafkaSecurity) -> faust.auth.Credentials | None:
    """Faust's ``broker_credentials`` for the Kafka security options (stream.connections):
    Faust hands them to every client it makes (consumer, producer, topic creation)."""
    if security.sasl:
        return faust.SASLCredentials(username=security.username, password=security.password,
                                     ssl_context=security.ssl_context,
                                     mechanism=security.mechanism)
    if security.ssl_context is not None:
        return faust.SSLCredentials(security.ssl_context)
    return None


def faust_options(settings: Settings) -> dict[str, Any]:
    """The Faust settings derived from ours (public so tests and tools can inspect them).
    :class:`SettingsError` when a security file (password, CA) cannot be used."""
    return {
        "broker": [f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
        "broker_credentials": broker_credentials(kafka_security(settings)),
        "env": {},  # Faust must not read os.environ (see the module docstring)
        "autodiscover": False,
        "datadir": str(settings.data_dir),
        "key_serializer": "raw",
        "value_serializer": "raw",
        "broker_commit_interval": settings.commit_interval_ms / 1000.0,
        "consumer_auto_offset_reset": settings.auto_offset_reset,
        "broker_session_timeout": settings.session_timeout_ms / 1000.0,
        "consumer_max_fetch_size": settings.fetch_partition_max_bytes,
        "producer_acks": -1,
        "producer_linger": settings.producer_linger_ms / 1000.0,
        "producer_max_request_size": max(BROKER_DEFAULT_MAX_MESSAGE_BYTES,
                                         settings.bundle_max_bytes + 64 * 1024),
        "topic_replication_factor": settings.replication_factor,
        "topic_disable_leader": True,  # no leader-only tasks: skip the leader topic
        # Do not wait on stop for every fetched message to be acked: after a crash (a batch
        # withheld, see stream.worker.agents.ingest) that wait never ends. Stopping commits what is
        # acknowledged; the rest is re-read by the next worker (at-least-once).
        "stream_wait_empty": False,
        "web_enabled": True,
        "web_bind": settings.web_host,
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        # the API takes no request bodies: aiohttp refuses to read a larger one (413); the
        # auth middleware also answers 413 to a declared Content-Length above it (stream.worker.api)
        "web_application_options": {"client_max_size": API_MAX_BODY_BYTES},
    }


def create_app(settings: Settings, *, with_agents: bool = True) -> SegstreamApp:
    """Build the segstream Faust app for *settings* (pure construction, no I/O).

    ``with_agents=False`` gives the bare app (topics, sensors, /metrics), e.g. for tools that
    only produce.
    """
    app = SegstreamApp(settings.group_id, **faust_options(settings))
    app.settings = settings
    app.segstream_topics = declare_topics(app, settings)
    registry = CollectorRegistry()
    app.metrics_registry = registry
    app.ingest_metrics = IngestMetrics.create(registry)
    app.partition_lag = PartitionLag.create(registry)
    # Faust's own sensors and the /metrics page, both serving *our* registry.
    setup_prometheus_sensors(app, registry=registry, name_prefix="faust")

    async def log_configuration() -> None:  # once logging is set up; secrets masked (repr)
        log.info("segstream configuration: %r", settings)

    app.task(log_configuration)

    async def check_redis_credentials() -> None:  # fail fast: a refused password never heals
        problem = await redis_auth_problem(settings)
        if problem is not None:
            log.critical("%s: stopping the worker", problem)
            await app.crash(SettingsError(problem))

    app.task(check_redis_credentials)
    if with_agents:
        attach_agents(app, settings, app.segstream_topics)
        # the membership API, its auth middleware, /health and /ready (stream.worker.api)
        app.membership_api = attach_api(app, settings)
    return app
