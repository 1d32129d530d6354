"""stream.worker.faust_adapter: every Faust internal it relies on is still there and still means
what it did in faust-streaming FAUST_CHECKED. A failure here after a Faust upgrade is the point:
re-check the marked uses in the adapter, then bump FAUST_CHECKED with the pin."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
from aiohttp import web
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import Producer as FaustAIOKafkaProducer
from faust.types import TP
from faust.types.tuples import Message

from stream.settings import Settings
from stream.worker.bootstrap import build_worker
from stream.worker.faust_adapter import (
    FAUST_CHECKED,
    FaustBatchOffsets,
    FaustCursor,
    IdempotentProducer,
    web_application,
)

REPO = Path(__file__).resolve().parents[2]


def bare_worker() -> Any:
    return build_worker(Settings.build(topic_prefix="fa-"), with_agents=False)


def test_checked_version_is_the_pinned_and_installed_one() -> None:
    pin = re.search(r'"faust-streaming==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert pin is not None
    assert FAUST_CHECKED == pin.group(1) == faust.__version__


def test_producer_settings_extra_still_reach_aiokafka() -> None:
    # Producer._new_producer merges _settings_extra() into AIOKafkaProducer's kwargs
    assert "_settings_extra" in inspect.getsource(FaustAIOKafkaProducer._new_producer)
    producer = bare_worker().app.producer  # App._new_producer: built, not started
    assert isinstance(producer, IdempotentProducer)
    extra = producer._settings_extra()
    assert extra["acks"] == "all" and extra["enable_idempotence"] is True


def test_consumer_committed_offset_is_still_a_mapping_of_committed_offsets() -> None:
    app = bare_worker().app
    assert "self._committed_offset = defaultdict(lambda: None)" in inspect.getsource(
        Consumer.__init__)
    cursor = FaustCursor(app)
    assert cursor.committed("fa-segstream-events", 0) is None
    app.consumer._committed_offset[TP("fa-segstream-events", 0)] = 41
    assert cursor.committed("fa-segstream-events", 0) == 41
    assert TP("fa-segstream-events", 1) not in app.consumer._committed_offset  # read, no insert


def _event(offset: int) -> Any:
    msg = Message("t", 0, offset, 0.0, 0, None, None, b"v", None)
    msg.incref()  # the stream's reference
    return SimpleNamespace(message=msg)


def test_held_messages_ack_only_on_release_and_withheld_ones_never() -> None:
    offsets = FaustBatchOffsets(SimpleNamespace(sensors=SimpleNamespace(
        on_message_out=lambda *a: None)))  # type: ignore[arg-type]
    held, withheld = _event(1), _event(2)
    offsets.hold([held, withheld])
    consumer: Any = object()
    # the stream drops its own reference: neither is finally acked yet (ours remains)
    assert held.message.ack(consumer) is False and withheld.message.ack(consumer) is False
    offsets.withhold([withheld])  # Message.acked = True: Message.ack() skips it from now on
    assert withheld.message.acked is True
    assert withheld.message.ack(consumer) is False
    assert held.message.ack(consumer) is True  # the last reference: the final ack


def test_web_app_is_the_aiohttp_application() -> None:
    assert isinstance(web_application(bare_worker().app), web.Application)


def test_conf_topic_keeps_the_stream_buffer_size() -> None:
    worker = bare_worker()
    settings = worker.settings
    assert worker.topics.raw.maxsize == 2 * settings.ingest.batch_records
    assert worker.topics.bundles.maxsize == 2 * settings.segmentation.batch_records
    assert worker.topics.definitions.compacting is True
