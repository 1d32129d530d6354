"""The segment language: parse, validate and compile segment definitions (no eval)."""
