"""The process's own metrics (CPU, memory, Python GC) in a segstream registry.

Each segstream process serves a registry of its own on /metrics (the worker's, the collector's,
deliver's), not prometheus-client's global one, where the default collectors register
themselves; so they are added to that registry here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector


def register_process_metrics(registry: CollectorRegistry) -> None:
    """prometheus-client's default collectors in ``registry`` (they live in its global registry
    otherwise, which segstream does not serve): ``process_*`` (CPU seconds, resident and
    virtual memory, open file descriptors, start time; from /proc, Linux), ``python_info`` and
    ``python_gc_*`` (collections, collected and uncollectable objects per generation)."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
