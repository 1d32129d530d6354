"""The segstream worker (``segstream worker``): the Faust app, its two agents (ingest: raw
events -> bundles; segmentation: bundles -> engine -> changes and Redis commits), the
membership API it serves, and the metrics it exports. See docs/architecture.md for the map.
"""
