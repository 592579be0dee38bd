"""reconcile layer (see architecture.md)."""
