"""The redownloader fallback (see handlers.py for what it reads and writes)."""
