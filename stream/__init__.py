"""The imperative shell: Faust app, agents, Kafka and Redis adapters, CLI."""
