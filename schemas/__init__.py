"""Event envelope, typed properties, validation with error codes, bundle codec."""
