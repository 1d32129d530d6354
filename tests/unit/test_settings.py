"""Settings: parsing from the environment, clear errors, and the generated reference page."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stream.settings import Settings, SettingsError, env_name, settings_markdown
from stream.worker.bootstrap import build_worker
from stream.worker.faust_adapter import IdempotentProducer

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_defaults_match_the_documented_topic_names() -> None:
    s = Settings.from_env({})
    assert [s.topic(r) for r in ("raw", "bundles", "deadletters", "changes", "definitions")] == [
        "segstream-events", "segstream-bundles", "segstream-deadletters", "segstream-changes",
        "segstream-definitions"]
    assert s.web_host == "127.0.0.1"


def test_every_field_is_read_from_its_env_name() -> None:
    samples = {"int": "7000", "str": "x-value", "Path": "/tmp/segstream-test", "bool": "false"}
    # fields with their own value rules (a password and its file exclude each other; TLS
    # files need a TLS Redis URL)
    special = {"agents": "ingest", "kafka_sasl_password_file": "", "redis_password_file": "",
               "redis_url": "rediss://x-value"}
    env: dict[str, str] = {}
    for f in dataclasses.fields(Settings):
        if f.name in special:
            env[env_name(f.name)] = special[f.name]
        elif f.metadata["choices"]:
            env[env_name(f.name)] = f.metadata["choices"][-1]
        else:
            env[env_name(f.name)] = samples[str(f.type)]
    s = Settings.from_env(env)
    for f in dataclasses.fields(Settings):
        assert str(getattr(s, f.name)).lower() == env[env_name(f.name)].lower(), f.name


def test_prefix_applies_to_topics_and_group() -> None:
    s = Settings.from_env({"SEGSTREAM_TOPIC_PREFIX": "run42-", "SEGSTREAM_APP_ID": "ingest"})
    assert s.topic("bundles") == "run42-segstream-bundles"
    assert s.group_id == "run42-ingest"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SEGSTREAM_WEB_PORT": "eighty"}, "SEGSTREAM_WEB_PORT='eighty': expected int"),
        ({"SEGSTREAM_BUNDLE_MAX_EVENTS": "0"}, "SEGSTREAM_BUNDLE_MAX_EVENTS=0: must be >= 1"),
        ({"SEGSTREAM_LOG_LEVEL": "loud"}, "must be one of debug"),
        ({"SEGSTREAM_AUTO_OFFSET_RESET": "middle"}, "must be one of earliest, latest"),
        ({"SEGSTREAM_KAFKA_BOOTSTRAP": ""}, "SEGSTREAM_KAFKA_BOOTSTRAP must not be empty"),
        ({"SEGSTREAM_RAW_TOPIC": " "}, "SEGSTREAM_RAW_TOPIC must not be empty"),
        ({"SEGSTREAM_DATA_DIR": ""}, "SEGSTREAM_DATA_DIR='': expected path"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace("*", r"\*")):
        Settings.from_env(env)


def test_unknown_variable_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.from_env({"SEGSTREAM_BUNDLE_MAX_EVENT": "3"})
    assert s.bundle_max_events == 500
    assert "SEGSTREAM_BUNDLE_MAX_EVENT" in caplog.text


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(SettingsError, match="SEGSTREAM_BUNDLE_PARTITIONS"):
        Settings(bundle_partitions=0)


def test_every_field_is_documented_and_the_doc_is_current() -> None:
    for f in dataclasses.fields(Settings):
        assert f.metadata["doc"].strip(), f"{f.name} has no documentation"
    text = DOC.read_text(encoding="utf-8")
    for f in dataclasses.fields(Settings):
        assert f"`{env_name(f.name)}`" in text, f"{env_name(f.name)} missing from {DOC}"
    assert text == settings_markdown(), (
        "docs/configuration.md is stale: run `python -m stream.settings > docs/configuration.md`")


def test_build_worker_applies_the_settings_without_io() -> None:
    s = Settings.from_env({"SEGSTREAM_TOPIC_PREFIX": "u1-", "SEGSTREAM_BUNDLE_PARTITIONS": "6",
                           "SEGSTREAM_WEB_PORT": "7001", "SEGSTREAM_AGENTS": "ingest",
                           "SEGSTREAM_COMMIT_INTERVAL_MS": "250"})
    worker = build_worker(s)
    app = worker.app
    assert app.conf.id == "u1-segstream"
    assert app.conf.web_port == 7001 and app.conf.web_bind == "127.0.0.1"
    assert app.conf.broker_commit_interval == 0.25
    assert worker.topics.bundles.get_topic_name() == "u1-segstream-bundles"
    assert worker.topics.bundles.partitions == 6
    assert list(app.agents) == ["segstream.ingest"]
    producer = app.producer  # built, not started: no connection
    assert isinstance(producer, IdempotentProducer)
    extra = producer._settings_extra()
    assert extra["enable_idempotence"] is True and extra["acks"] == "all"
