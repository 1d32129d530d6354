"""The composition root: :func:`build_worker` builds the whole worker from Settings.

Everything the worker is made of is created and wired here, explicitly: the Faust app and its
topics, the metrics registry, the ingest and segmentation agents with the ports they depend on
(:mod:`stream.worker.ports`, backed by :mod:`stream.worker.faust_adapter`), their app tasks and
rebalance callbacks, and the membership API with what it reads of the segmentation agent. No
part looks another up on the app. Nothing connects here: Faust connects when a worker starts
the app (``faust.Worker(worker.app).execute_from_commandline()``, see stream.cli.cmd_worker).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CollectorRegistry

from processors.lang.ast import Catalogue
from stream.connections import redis_auth_problem
from stream.definitions import file_catalogue
from stream.eventtypes import LiveTypes
from stream.process_metrics import register_process_metrics
from stream.settings import Settings, SettingsError
from stream.worker.agents import ingest, segmentation
from stream.worker.agents.ingest import IngestAgent
from stream.worker.agents.segmentation import SegmentationAgent
from stream.worker.api import MembershipApi, attach_api
from stream.worker.app import faust_options
from stream.worker.faust_adapter import (
    FaustBatchOffsets,
    FaustCursor,
    FaustSink,
    SegstreamApp,
    Topics,
    check_version,
    declare_topics,
    define_batch_agent,
    on_rebalance,
)
from stream.worker.metrics import IngestMetrics, PartitionLag
from stream.worker.ports import SystemClock
from stream.worker.segment_metrics import SegmentMetrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Worker:
    """The parts of one worker, as built (tests and benchmarks reach them here)."""

    settings: Settings
    app: SegstreamApp
    topics: Topics
    registry: CollectorRegistry  # served on /metrics with Faust's own sensors
    ingest_metrics: IngestMetrics
    lag: PartitionLag  # segstream_partition_lag, set by each agent
    types: LiveTypes  # the custom event types, followed on the event-types topic
    ingest: IngestAgent | None = None
    segmentation: SegmentationAgent | None = None
    api: MembershipApi | None = None


def build_worker(settings: Settings, *, with_agents: bool = True) -> Worker:
    """Build the worker for *settings* (pure construction, no I/O). ``with_agents=False``
    gives the bare app (topics, sensors, /metrics), e.g. for tools that only produce; the
    agents ``settings.process.agents`` names otherwise, and the membership API.
    :class:`SettingsError` when a security file (password, CA) cannot be used."""
    check_version()
    app = SegstreamApp(settings.group_id, **faust_options(settings))
    registry = CollectorRegistry()
    register_process_metrics(registry)  # process_* and python_*: CPU, memory, GC
    worker = Worker(settings, app, declare_topics(app, settings), registry,
                    IngestMetrics.create(registry), PartitionLag.create(registry),
                    LiveTypes.from_settings(settings))
    # Faust's own sensors and the /metrics page, both serving *our* registry.
    setup_prometheus_sensors(app, registry=registry, name_prefix="faust")
    _add_startup_tasks(worker)
    if with_agents:
        worker.types.followed = True
        app.task(worker.types.follow)
        if "ingest" in settings.process.agents:
            attach_ingest(worker)
        if "segmentation" in settings.process.agents:
            attach_segmentation(worker)
        attach_membership_api(worker)
    return worker


def _add_startup_tasks(worker: Worker) -> None:
    app, settings = worker.app, worker.settings

    async def log_configuration() -> None:  # once logging is set up; secrets masked (repr)
        log.info("segstream configuration: %r", settings)

    app.task(log_configuration)

    async def check_redis_credentials() -> None:  # fail fast: a refused password never heals
        problem = await redis_auth_problem(settings)
        if problem is not None:
            log.critical("%s: stopping the worker", problem)
            await app.crash(SettingsError(problem))

    app.task(check_redis_credentials)


def attach_ingest(worker: Worker) -> IngestAgent:
    """The ingest agent on the raw topic, and its lag task."""
    app, settings, topics = worker.app, worker.settings, worker.topics
    agent = IngestAgent(settings, sink=FaustSink(app), offsets=FaustBatchOffsets(app),
                        cursor=FaustCursor(app), fatal=app, metrics=worker.ingest_metrics,
                        lag=worker.lag, types=worker.types)
    define_batch_agent(app, topics.raw, ingest.AGENT_NAME, agent.run,
                       batch_records=settings.ingest.batch_records,
                       within_s=settings.ingest.bundle_linger_ms / 1000.0,
                       declare=(topics.bundles, topics.deadletters))
    app.task(agent.lag_task)
    worker.ingest = agent
    return agent


def attach_segmentation(worker: Worker, definitions: Catalogue | None = None
                        ) -> SegmentationAgent:
    """The segmentation agent on the bundles topic, its timer, definitions and lag tasks and
    its rebalance callbacks. ``definitions``: the file's (``segments_file``) unless given."""
    app, settings, topics = worker.app, worker.settings, worker.topics
    agent = SegmentationAgent(
        settings, definitions if definitions is not None
        else file_catalogue(settings.segmentation.segments_file, worker.types.types),
        sink=FaustSink(app), cursor=FaustCursor(app), clock=SystemClock(), fatal=app,
        metrics=SegmentMetrics.create(worker.registry), lag=worker.lag,
        declare_definitions=topics.definitions.maybe_declare, types=worker.types)
    define_batch_agent(app, topics.bundles, segmentation.AGENT_NAME, agent.run,
                       batch_records=settings.segmentation.batch_records,
                       within_s=settings.segmentation.linger_ms / 1000.0,
                       declare=(topics.changes, topics.deadletters))
    app.task(agent.timers)
    app.task(agent.follow_definitions)
    app.task(agent.lag_task)
    on_rebalance(app, settings.topic("bundles"), assigned=agent.on_assigned,
                 revoked=agent.on_revoked)
    worker.segmentation = agent
    return agent


def attach_membership_api(worker: Worker) -> MembershipApi:
    """The membership API, its auth middleware, /health and /ready (stream.worker.api): it
    serves the segmentation agent's definitions when this worker runs it."""
    seg = worker.segmentation
    api = attach_api(worker.app, worker.settings,
                     definitions=None if seg is None else (lambda: seg.definitions),
                     definitions_ready=None if seg is None else seg.definitions_ready)
    worker.api = api
    return api
