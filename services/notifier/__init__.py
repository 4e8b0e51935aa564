"""The notifier stage (see handlers.py for what it reads and writes)."""
