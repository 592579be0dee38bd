"""emulator layer (see architecture.md)."""
