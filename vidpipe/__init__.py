"""vidpipe: a Kafka pipeline that turns prompts into stored, playable videos, reliably."""

__version__ = "0.1.0"
