"""Faust agents, one per module; ``attach_agents`` registers them on an app.

Each agent module exposes ``attach(app, settings, topics) -> None``, which defines the agent on
that app instance (agents are created per app by :func:`stream.worker.app.create_app`, never at
import time). Modules listed in ``AGENT_MODULES`` but not present yet are skipped, so the worker
runs whatever agents exist.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from stream.settings import Settings

if TYPE_CHECKING:
    import faust

    from stream.topics import Topics

AGENT_MODULES: tuple[str, ...] = (
    "stream.worker.agents.ingest",
    "stream.worker.agents.segmentation",
)


def attach_agents(app: faust.App, settings: Settings, topics: Topics,
                  modules: tuple[str, ...] = AGENT_MODULES) -> list[str]:
    """Attach the agent modules that ``settings.agents`` names; returns the modules attached."""
    attached = []
    wanted = {f"stream.worker.agents.{name}" for name in settings.agent_names}
    for name in modules:
        if name not in wanted:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.attach(app, settings, topics)
        attached.append(name)
    return attached
