"""Settings: parsing from the environment, clear errors, and the generated reference page."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.settings import (
    KafkaSettings,
    ProcessSettings,
    Settings,
    SettingsError,
    setting_specs,
    settings_markdown,
)
from stream.worker.bootstrap import build_worker
from stream.worker.faust_adapter import IdempotentProducer

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_defaults_match_the_documented_topic_names() -> None:
    s = Settings.from_env({})
    assert [s.topic(r) for r in ("raw", "bundles", "deadletters", "changes", "definitions")] == [
        "segstream-events", "segstream-bundles", "segstream-deadletters", "segstream-changes",
        "segstream-definitions"]
    assert s.process.web_host == "127.0.0.1"


#: the variables of the flat settings before they were grouped: grouping changed no name
VARIABLES_BEFORE_GROUPING = frozenset("SEGSTREAM_" + n for n in (
    "KAFKA_BOOTSTRAP",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SASL_PASSWORD_FILE",
    "KAFKA_SSL_CAFILE",
    "KAFKA_SSL_CERTFILE",
    "KAFKA_SSL_KEYFILE",
    "KAFKA_SSL_CHECK_HOSTNAME",
    "REDIS_URL",
    "REDIS_USERNAME",
    "REDIS_PASSWORD",
    "REDIS_PASSWORD_FILE",
    "REDIS_SSL_CAFILE",
    "REDIS_SSL_CERTFILE",
    "REDIS_SSL_KEYFILE",
    "REDIS_SSL_CHECK_HOSTNAME",
    "APP_ID",
    "TOPIC_PREFIX",
    "RAW_TOPIC",
    "BUNDLES_TOPIC",
    "DEADLETTERS_TOPIC",
    "CHANGES_TOPIC",
    "DEFINITIONS_TOPIC",
    "TYPES_TOPIC",
    "RAW_PARTITIONS",
    "BUNDLE_PARTITIONS",
    "DEADLETTER_PARTITIONS",
    "CHANGES_PARTITIONS",
    "REPLICATION_FACTOR",
    "BUNDLE_MAX_EVENTS",
    "BUNDLE_MAX_BYTES",
    "BUNDLE_LINGER_MS",
    "INGEST_BATCH_RECORDS",
    "INGEST_MAX_INFLIGHT_BATCHES",
    "MAX_RECORD_BYTES",
    "MAX_EVENTS_PER_RECORD",
    "MAX_EVENT_BYTES",
    "MAX_FUTURE_MS",
    "TYPES_FILE",
    "COMMIT_INTERVAL_MS",
    "SESSION_TIMEOUT_MS",
    "FETCH_PARTITION_MAX_BYTES",
    "PRODUCER_LINGER_MS",
    "AUTO_OFFSET_RESET",
    "AGENTS",
    "ID_HASH_KEY",
    "SEGMENTS_FILE",
    "REDIS_NAMESPACE",
    "SEGMENT_BATCH_RECORDS",
    "SEGMENT_LINGER_MS",
    "SEGMENT_BATCH_MAX_BYTES",
    "STATE_CACHE_MAX",
    "TIMER_INTERVAL_MS",
    "TIMER_BATCH",
    "API_AUTH",
    "API_TOKENS",
    "API_TOKENS_FILE",
    "API_REVOKED_TOKENS",
    "COLLECTOR_HOST",
    "COLLECTOR_PORT",
    "COLLECTOR_AUTH",
    "COLLECTOR_WRITE_KEYS",
    "COLLECTOR_WRITE_KEYS_FILE",
    "COLLECTOR_REVOKED_KEYS",
    "COLLECTOR_CORS_ORIGINS",
    "COLLECTOR_RATE_PER_S",
    "COLLECTOR_RATE_BURST",
    "COLLECTOR_PRODUCE_TIMEOUT_MS",
    # webhook delivery (landed next to the grouping: same names as on its branch)
    "DESTINATIONS_FILE",
    "DELIVER_GROUP",
    "DELIVER_DEADLETTERS_TOPIC",
    "DELIVER_PORT",
    "WEB_HOST",
    "WEB_PORT",
    "DATA_DIR",
    "LOG_LEVEL",
    # the command-line tools' bounded wait for a server (added after the grouping)
    "CONNECT_WAIT_S",
    "LOG_FORMAT"))


def test_grouping_kept_every_variable_name() -> None:
    assert {s.env for s in setting_specs()} == VARIABLES_BEFORE_GROUPING
    assert len(setting_specs()) == len(VARIABLES_BEFORE_GROUPING)


def test_every_field_is_read_from_its_env_name() -> None:
    samples = {"int": "7000", "str": "x-value", "path": "/tmp/segstream-test", "bool": "false",
               "list": "x-value"}
    # settings with their own value rules (a password and its file exclude each other; TLS
    # files need a TLS Redis URL)
    special = {"kafka_sasl_password_file": "", "redis_password_file": "",
               "redis_url": "rediss://x-value"}
    env: dict[str, str] = {}
    for spec in setting_specs():
        if spec.key in special:
            env[spec.env] = special[spec.key]
        elif spec.choices:
            env[spec.env] = spec.choices[-1]
        else:
            env[spec.env] = samples[spec.kind]
    s = Settings.from_env(env)
    for spec in setting_specs():
        value = spec.get(s)
        shown = ",".join(value) if spec.kind == "list" else str(value)
        assert shown.lower() == env[spec.env].lower(), spec.key


def test_list_settings_are_parsed_once_into_tuples() -> None:
    s = Settings.from_env({"SEGSTREAM_KAFKA_BOOTSTRAP": " k1:9092, ,k2:9092 ",
                           "SEGSTREAM_AGENTS": "Segmentation",
                           "SEGSTREAM_COLLECTOR_CORS_ORIGINS": "https://a.example,*"})
    assert s.kafka.bootstrap == ("k1:9092", "k2:9092")
    assert s.process.agents == ("segmentation",)  # choices are case-insensitive, like before
    assert s.collector.cors_origins == ("https://a.example", "*")
    assert Settings().api.tokens == () and Settings().collector.write_keys == ()


def test_enumerated_settings_are_literals() -> None:
    choices = {s.key: s.choices for s in setting_specs() if s.choices}
    assert choices == {
        "kafka_security_protocol": ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl"),
        "kafka_sasl_mechanism": ("plain", "scram-sha-256", "scram-sha-512"),
        "auto_offset_reset": ("earliest", "latest"),
        "api_auth": ("tokens", "none"), "collector_auth": ("keys", "none"),
        "agents": ("ingest", "segmentation"),
        "log_level": ("debug", "info", "warning", "error", "critical"),
        "log_format": ("text", "json")}


def test_groups_validate_on_their_own_and_keys_are_checked() -> None:
    with pytest.raises(SettingsError, match="SEGSTREAM_KAFKA_BOOTSTRAP='k:1': expected a tuple"):
        KafkaSettings(bootstrap="k:1")  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="SEGSTREAM_AGENTS='ingest,x': a comma-separated"):
        ProcessSettings(agents=("ingest", "x"))  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="SEGSTREAM_AGENTS must not be empty"):
        Settings.from_env({"SEGSTREAM_AGENTS": " , "})
    with pytest.raises(SettingsError, match="SEGSTREAM_SEGMENT_LINGER_MS=0: must be >= 1"):
        Settings().but(segment_linger_ms=0)
    with pytest.raises(TypeError, match="unknown setting 'segment_linger'"):
        Settings.build(segment_linger=3)
    s = Settings.build(topic_prefix="p-", segment_linger_ms=5)
    assert (s.topics.prefix, s.segmentation.linger_ms, s.ingest.bundle_linger_ms) == ("p-", 5, 10)
    assert s.but(bundle_linger_ms=7).ingest.bundle_linger_ms == 7


def test_secrets_and_url_passwords_stay_out_of_every_repr() -> None:
    s = Settings.build(api_tokens=("tok-0123456789abcdef",), redis_url="redis://:pw@h/0")
    for text in (repr(s), repr(s.api), repr(s.redis), str(s)):
        assert "tok-0123456789abcdef" not in text and ":pw@" not in text, text
    assert "api_tokens='***'" in repr(s) and "tokens='***'" in repr(s.api)


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
        ({"SEGSTREAM_AGENTS": "ingest,bogus"}, "a comma-separated subset of ingest, segmentation"),
        ({"SEGSTREAM_RAW_TOPIC": " "}, "SEGSTREAM_RAW_TOPIC must not be empty"),
        ({"SEGSTREAM_DATA_DIR": ""}, "SEGSTREAM_DATA_DIR='': expected path"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace("*", r"\*")):
        Settings.from_env(env)


def test_unknown_variable_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.from_env({"SEGSTREAM_BUNDLE_MAX_EVENT": "3"})
    assert s.ingest.bundle_max_events == 500
    assert "SEGSTREAM_BUNDLE_MAX_EVENT" in caplog.text


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(SettingsError, match="SEGSTREAM_BUNDLE_PARTITIONS"):
        Settings.build(bundle_partitions=0)


def test_every_field_is_documented_and_the_doc_is_current() -> None:
    for spec in setting_specs():
        assert spec.field.metadata["doc"].strip(), f"{spec.key} has no documentation"
    text = DOC.read_text(encoding="utf-8")
    for spec in setting_specs():
        assert f"`{spec.env}`" in text, f"{spec.env} missing from {DOC}"
    for group in ("Kafka", "Redis", "Topics", "Ingest", "Segmentation", "Membership API",
                  "HTTP collector", "Process"):
        assert f"\n## {group}\n" in text, group
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
