"""Customer-state model and the stores behind small Protocols (in-memory and Redis)."""
