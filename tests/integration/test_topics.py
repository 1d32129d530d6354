"""stream.topics.create_topics on the real broker: the table's configs reach Kafka."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from stream.settings import Settings
from stream.topics import create_topics, topic_spec


def test_the_definitions_topic_is_created_compacted_with_one_partition(
        kafka_bootstrap: str, unique_topic_prefix: str) -> None:
    settings = Settings.from_env({"SEGSTREAM_TOPIC_PREFIX": unique_topic_prefix})
    spec = topic_spec(settings, "definitions")
    client = {"bootstrap_servers": kafka_bootstrap}
    create_topics(client, [spec])
    create_topics(client, [spec])  # exist_ok: a second creation leaves it as it is
    admin = KafkaAdminClient(**client)
    try:
        (described,) = admin.describe_topics([spec.name])
        assert len(described["partitions"]) == 1
        described_configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC,
                                                                   spec.name)])
        assert described_configs["topic"][spec.name]["cleanup.policy"]["value"] == "compact"
    finally:
        admin.close()
