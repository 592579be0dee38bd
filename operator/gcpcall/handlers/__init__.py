"""handlers layer (see architecture.md)."""
