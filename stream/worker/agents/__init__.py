"""The worker's two agents: ingest (raw records -> bundles) and segmentation (bundles -> engine
-> changes and Redis commits). They are built and wired by :mod:`stream.worker.bootstrap`."""
