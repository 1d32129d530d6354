"""The HTTP event collector (``segstream collector``): a separate aiohttp service that checks
write keys and events and produces them to the raw topic (docs/collector.md)."""
