"""Export the JSON Schema of every event into schemas/json/ (run: python -m schemas.export)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.events import PUBLIC_EVENTS, DeadLetter

__all__ = ["SCHEMA_DIR", "export", "rendered_schemas"]

SCHEMA_DIR = Path(__file__).parent / "json"


def rendered_schemas() -> dict[str, str]:
    """File name -> JSON text, exactly as it is checked in."""
    out: dict[str, str] = {}
    models: list[type[BaseModel]] = [*PUBLIC_EVENTS, DeadLetter]
    for model in models:
        schema: dict[str, Any] = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://vidpipe.dev/schemas/{model.__name__}.schema.json"
        out[f"{model.__name__}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in export():
        print(path)
