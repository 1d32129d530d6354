"""The segmentation agent (:mod:`.agent`) and its parts, one job each (see its module doc)."""

from stream.worker.agents.segmentation.agent import AGENT_NAME, SegmentationAgent
from stream.worker.agents.segmentation.running import engine_now

__all__ = ["AGENT_NAME", "SegmentationAgent", "engine_now"]
