"""The Qlib data directory: layout, bin files, atomic per-stock commits, shared files, reads."""
