"""Event envelope, typed properties, validation with error codes, bundle codec.

The event contract and its codecs; stdlib, orjson and msgspec only (no Kafka, no Faust):

* :mod:`schemas.models`      msgspec models of the envelope and the 13 event types (the source
  of truth for the validator and the published JSON Schema);
* :mod:`schemas.validation`  ``validate_event``, ``parse_record``, ``routing_id``, ``Limits``;
* :mod:`schemas.errors`      ``SegstreamError`` (the error root, ``retriable`` flag),
  ``ErrorCode`` (the dead-letter reasons) and ``InvalidEvent``;
* :mod:`schemas.bundle`      the bundle-topic records (``events`` and alias ``handoff``);
* :mod:`schemas.changes`     segment-change records; :mod:`schemas.deadletter` dead letters;
* :mod:`schemas.partitioner` Kafka's murmur2 partitioner (routing id -> partition);
* :mod:`schemas.publish`     JSON Schema generation (``segstream schemas export``);
* :mod:`schemas.numbers`     numbers in text input (CSV cells) read by JSON's rules.

The reference for website developers is docs/events.md.
"""
