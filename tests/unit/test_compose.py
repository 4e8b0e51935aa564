"""compose.yaml is checked against the Compose Specification's JSON Schema (no Docker needed)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from services.registry import STAGES

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "ref" / "compose-spec.json"


def test_compose_file_is_valid_and_runs_every_stage() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    schema = json.loads(SPEC.read_text())
    jsonschema.Draft7Validator(schema).validate(compose)
    services = compose["services"]
    for stage in STAGES:
        assert services[stage]["command"] == ["run", stage]
        assert services[stage]["environment"]["VIDPIPE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert {"kafka", "postgres", "emulator"} <= set(services)
