"""gcp layer (see architecture.md)."""
