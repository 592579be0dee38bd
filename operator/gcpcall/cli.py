"""Command line (filled in by the foundation)."""


def main() -> int:
    return 0
