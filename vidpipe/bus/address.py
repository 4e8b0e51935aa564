"""Where the Kafka broker is: the one rule every command and every stage follows.

1. VIDPIPE_KAFKA_BOOTSTRAP (the `kafka_bootstrap` setting), when set;
2. else the broker a running dev stack (`vidpipe up`) recorded in `{state_dir}/up.json`;
3. else a ConfigurationError saying how to get one.

The dev stack writes that file; reading it here is plain JSON, so production code never imports
the dev tooling.
"""

from __future__ import annotations

import json
from pathlib import Path

from vidpipe.errors import ConfigurationError
from vidpipe.settings import Settings

__all__ = ["DEV_STACK_STATE_FILE", "RECORDED_BROKER_KEY", "broker_address", "recorded_broker"]

# The dev stack's state file in `settings.state_dir`, and the key holding its broker address.
DEV_STACK_STATE_FILE = "up.json"
RECORDED_BROKER_KEY = "bootstrap_servers"


def recorded_broker(state_dir: Path) -> str | None:
    """The bootstrap servers a running dev stack recorded, or None (no file, or unreadable)."""
    try:
        state = json.loads((state_dir / DEV_STACK_STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    address = state.get(RECORDED_BROKER_KEY) if isinstance(state, dict) else None
    return str(address) if address else None


def broker_address(settings: Settings) -> str:
    """The bootstrap servers ("host:port[,host:port]") to connect to, by the rule above."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    recorded = recorded_broker(settings.state_dir)
    if recorded:
        return recorded
    raise ConfigurationError(
        "no broker: set VIDPIPE_KAFKA_BOOTSTRAP or start one with `vidpipe up`"
    )
