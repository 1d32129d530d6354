"""The Faust app's options, derived from :class:`stream.settings.Settings` (``faust_options``).

The app itself is built by :func:`stream.worker.bootstrap.build_worker`. Faust is given
``env={}`` so that it reads no environment variables of its own (``WEB_PORT``, ``BROKER_URL``...):
:class:`stream.settings.Settings` is the only configuration.

The producer is idempotent with ``acks=all``
(:class:`stream.worker.faust_adapter.IdempotentProducer`): the ingest agent's at-least-once
invariant relies on an acknowledged bundle being durable, and on retries neither duplicating nor
reordering the bundles of a partition.
"""

from __future__ import annotations

from typing import Any

import faust

from stream.connections import KafkaSecurity, kafka_security
from stream.settings import Settings
from stream.worker.api import API_MAX_BODY_BYTES

#: Kafka's default ``message.max.bytes`` (what a broker accepts in one record batch).
BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024


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
        "broker": [f"kafka://{host}" for host in settings.kafka.bootstrap],
        "broker_credentials": broker_credentials(kafka_security(settings)),
        "env": {},  # Faust must not read os.environ (see the module docstring)
        "autodiscover": False,
        "datadir": str(settings.process.data_dir),
        "key_serializer": "raw",
        "value_serializer": "raw",
        "broker_commit_interval": settings.kafka.commit_interval_ms / 1000.0,
        "consumer_auto_offset_reset": settings.kafka.auto_offset_reset,
        "broker_session_timeout": settings.kafka.session_timeout_ms / 1000.0,
        "consumer_max_fetch_size": settings.kafka.fetch_partition_max_bytes,
        "producer_acks": -1,
        "producer_linger": settings.kafka.producer_linger_ms / 1000.0,
        "producer_max_request_size": max(BROKER_DEFAULT_MAX_MESSAGE_BYTES,
                                         settings.ingest.bundle_max_bytes + 64 * 1024),
        "topic_replication_factor": settings.topics.replication_factor,
        "topic_disable_leader": True,  # no leader-only tasks: skip the leader topic
        # Do not wait on stop for every fetched message to be acked: after a crash (a batch
        # withheld, see stream.worker.agents.ingest) that wait never ends. Stopping commits what is
        # acknowledged; the rest is re-read by the next worker (at-least-once).
        "stream_wait_empty": False,
        "web_enabled": True,
        "web_bind": settings.process.web_host,
        "web_host": settings.process.web_host,
        "web_port": settings.process.web_port,
        # the API takes no request bodies: aiohttp refuses to read a larger one (413); the
        # auth middleware also answers 413 to a declared Content-Length above it (stream.worker.api)
        "web_application_options": {"client_max_size": API_MAX_BODY_BYTES},
    }
