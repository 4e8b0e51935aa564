"""The placeholder stage (see handlers.py for what it reads and writes)."""
