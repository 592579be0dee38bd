"""api layer (see architecture.md)."""
