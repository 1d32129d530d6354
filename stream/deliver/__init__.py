"""``segstream deliver``: POST segment changes to webhook destinations (docs/destinations.md).

A separate process with its own consumer group on the segment-changes topic. Modules:
``config`` (the destinations file), ``signing`` (HMAC-SHA256 signature), ``lane`` (batching,
retries with backoff, dead letters, per destination), ``offsets`` (which Kafka offsets may be
committed), ``http`` (the aiohttp sender), ``runner`` (the Kafka loop), ``metrics``,
``command`` (the CLI wiring).
"""
