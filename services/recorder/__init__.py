"""The recorder stage (see handlers.py for what it reads and writes)."""
