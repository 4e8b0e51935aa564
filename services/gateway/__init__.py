"""The HTTP gateway and its dashboard (see handlers.py for what it reads and writes)."""
