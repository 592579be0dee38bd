"""`python -m gcpcall` is the same as the `gcpcall-operator` console script."""

from gcpcall.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
