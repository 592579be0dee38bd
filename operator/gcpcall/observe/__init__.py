"""observe layer (see architecture.md)."""
