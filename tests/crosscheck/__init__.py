"""Cloud Tasks cases run by hand against any emulator (see README.md)."""
