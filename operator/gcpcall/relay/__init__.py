"""relay layer (see architecture.md)."""
