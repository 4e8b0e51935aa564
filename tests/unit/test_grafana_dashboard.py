"""docs/grafana/vidpipe-dashboard.json asks only for series the stages and the gateway export.

The exported names come from the registries themselves (every registered stage built as it
runs, and the gateway's app), not from a list kept beside the dashboard.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.gateway.app import create_app
from services.registry import STAGES, create_stage
from vidpipe.settings import Settings

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "vidpipe-dashboard.json"
NOWHERE = "127.0.0.1:9"  # never dialled: nothing here starts

#: What a sample of each metric type is called in the exposition format.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
_SERIES = re.compile(r"\b((?:vidpipe|faststream)_[A-Za-z0-9_]+)\b")
_ANY_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
#: PromQL words that are not metric names (functions, aggregations, keywords).
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "irate",
    "histogram_quantile", "le", "offset", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless",
}  # fmt: skip


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        topic_prefix="u.",
        database_url=f"sqlite:///{tmp_path / 'vidpipe.db'}",
        storage_url=f"file://{tmp_path / 'videos'}",
        webhook_secret=None,
        metrics_port=None,
    )


def _sample_names(registry: CollectorRegistry) -> set[str]:
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in SUFFIXES.get(family.type, ("",))
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    tmp_path = tmp_path_factory.mktemp("exported")
    settings = _settings(tmp_path)
    names: set[str] = set()
    for name in STAGES:
        names |= _sample_names(create_stage(name, settings, bootstrap_servers=NOWHERE).metrics)
    gateway = create_app(settings, bootstrap_servers=NOWHERE)
    names |= _sample_names(gateway.state.metrics.registry)
    return names


def _panels() -> list[dict[str, Any]]:
    document = json.loads(DASHBOARD.read_text())
    return [p for p in document["panels"] if p.get("type") != "row"]


def _outside_braces_and_brackets(expr: str) -> str:
    """The expression without label matchers, range selectors and strings."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    return re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)


def test_every_panel_asks_for_at_least_one_vidpipe_or_faststream_series() -> None:
    panels = _panels()
    assert len(panels) >= 15
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert _SERIES.search(target["expr"]), (panel["title"], target["expr"])


def test_every_series_the_dashboard_names_is_exported(exported: set[str]) -> None:
    missing = {
        (panel["title"], name)
        for panel in _panels()
        for target in panel["targets"]
        for name in _SERIES.findall(target["expr"])
        if name not in exported
    }
    assert not missing


def test_no_expression_names_a_series_outside_vidpipe_and_faststream() -> None:
    # Catches a metric renamed to something the first test's pattern would not see.
    for panel in _panels():
        for target in panel["targets"]:
            words = set(_ANY_NAME.findall(_outside_braces_and_brackets(target["expr"])))
            strays = {w for w in words - PROMQL_WORDS if not _SERIES.fullmatch(w)}
            assert not strays, (panel["title"], target["expr"], strays)


def test_the_domain_metrics_all_appear_on_the_dashboard(exported: set[str]) -> None:
    asked = {name for p in _panels() for t in p["targets"] for name in _SERIES.findall(t["expr"])}
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in asked}
    domain = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in exported}
    domain = {n for n in domain if n.startswith("vidpipe_")}
    assert domain <= families, domain - families
