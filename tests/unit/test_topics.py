"""stream.topics: one table of topic specs, and every creator builds its topics from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest

from stream.cli import cmd_segments
from stream.settings import Settings, TopicRole
from stream.topics import TopicSpec, topic_spec, topic_specs
from stream.worker.bootstrap import build_worker
from stream.worker.faust_adapter import declare_topics


def settings(**env: str) -> Settings:
    return Settings.from_env({"SEGSTREAM_TOPIC_PREFIX": "t1-", **env})


def test_the_table_names_every_role_once() -> None:
    specs = topic_specs(settings())
    assert set(specs) == set(get_args(TopicRole))
    assert all(spec.role == role for role, spec in specs.items())
    assert len({spec.name for spec in specs.values()}) == len(specs)


def test_names_partitions_and_replication_come_from_the_settings() -> None:
    specs = topic_specs(settings(SEGSTREAM_RAW_PARTITIONS="5", SEGSTREAM_BUNDLE_PARTITIONS="6",
                                 SEGSTREAM_DEADLETTER_PARTITIONS="2",
                                 SEGSTREAM_CHANGES_PARTITIONS="3",
                                 SEGSTREAM_REPLICATION_FACTOR="3",
                                 SEGSTREAM_RAW_TOPIC="clicks"))
    assert specs["raw"] == TopicSpec("raw", "t1-clicks", 5, 3)
    assert [specs[r].partitions for r in ("bundles", "deadletters", "changes")] == [6, 2, 3]
    assert {spec.replication for spec in specs.values()} == {3}


def test_only_the_definitions_and_types_topics_are_compacted_with_one_partition() -> None:
    specs = topic_specs(settings(SEGSTREAM_DEFINITIONS_TOPIC="defs",
                                 SEGSTREAM_TYPES_TOPIC="tt"))
    defs, types = specs["definitions"], specs["types"]
    assert (defs.name, defs.partitions, defs.compacted) == ("t1-defs", 1, True)
    assert (types.name, types.partitions, types.compacted) == ("t1-tt", 1, True)
    assert defs.configs() == types.configs() == {"cleanup.policy": "compact"}
    assert [r for r, s in specs.items() if s.configs()] == ["definitions", "types"]


def test_configs_carry_a_retention() -> None:
    spec = TopicSpec("changes", "c", 1, 1, retention_ms=86_400_000)
    assert spec.configs() == {"retention.ms": "86400000"}
    assert spec.resized(7) == TopicSpec("changes", "c", 7, 1, retention_ms=86_400_000)


def test_the_worker_declares_its_faust_topics_from_the_table(tmp_path: Path) -> None:
    s = settings(SEGSTREAM_DATA_DIR=str(tmp_path), SEGSTREAM_CHANGES_PARTITIONS="3")
    app = build_worker(s, with_agents=False).app
    declared = declare_topics(app, s)
    for faust_topic, spec in zip(declared.all(), topic_specs(s).values(), strict=True):
        assert list(faust_topic.topics) == [spec.name]
        assert faust_topic.partitions == spec.partitions
        assert faust_topic.replicas == spec.replication
        assert bool(faust_topic.compacting) is spec.compacted
        assert faust_topic.internal


def test_segments_apply_creates_the_definitions_topic_from_the_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[tuple[dict[str, Any], list[TopicSpec]]] = []
    monkeypatch.setattr(cmd_segments, "create_topics",
                        lambda kwargs, specs, **_: created.append((kwargs, list(specs))))
    s = settings()
    cmd_segments.ensure_topic(s)
    assert [specs for _, specs in created] == [[topic_spec(s, "definitions")]]
