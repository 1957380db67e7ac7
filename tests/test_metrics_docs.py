"""docs/: the Grafana dashboard and the Prometheus alert rules parse, and they (and the
table of docs/monitoring.md) name only metrics the api exports; every exported metric is
documented."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from appliance import redis_keys
from appliance.contracts import EngineHeartbeat
from appliance.paths import REPO_DIR

DOCS = REPO_DIR / "docs"
NAME = re.compile(r"\bwapp_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


@pytest.fixture
async def exported(api_client: httpx.AsyncClient, redis: aioredis.Redis) -> dict[str, set[str]]:
    """Family name -> the series names it exports, from a real scrape (with an engine
    heartbeat, so the engine figures are there too)."""
    beat = EngineHeartbeat(
        pid=7,
        upstream="whatsapp",
        started_at="2026-03-01T00:00:00Z",  # type: ignore[arg-type]
        uptime_s=1,
        rss_bytes=1,
        heap_used_bytes=1,
        heap_total_bytes=1,
        sessions=0,
        loop_lag_ms=0,
        node_version="v24",
    )
    await redis.set(redis_keys.engine_heartbeat_key("whatsapp"), beat.model_dump_json(), ex=60)
    assert (await api_client.get("/healthz")).status_code == 200
    response = await api_client.get("/metrics")
    assert response.status_code == 200
    return {
        family.name: {family.name + suffix for suffix in SUFFIXES[family.type]}
        for family in text_string_to_metric_families(response.text)
    }


def series(exported: dict[str, set[str]]) -> set[str]:
    return set().union(*exported.values())


def exprs(value: Any) -> list[str]:
    """Every `expr` string anywhere in a JSON/YAML document."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "expr" and isinstance(item, str):
                found.append(item)
            else:
                found += exprs(item)
    elif isinstance(value, list):
        for item in value:
            found += exprs(item)
    return found


def test_the_exported_families_are_the_documented_ones(exported: dict[str, set[str]]) -> None:
    for required in (
        "wapp_sessions",
        "wapp_session_state",
        "wapp_messages",
        "wapp_send_queue_depth",
        "wapp_webhook_deliveries",
        "wapp_webhook_backlog",
        "wapp_engine_rss_bytes",
        "wapp_engine_heap_used_bytes",
        "wapp_engine_loop_lag_seconds",
        "wapp_reconnects",
        "wapp_recycles",
        "wapp_http_requests",
        "wapp_http_request_duration_seconds",
    ):
        assert required in exported, required
    text = (DOCS / "monitoring.md").read_text(encoding="utf-8")
    table = {m.group(1) for m in re.finditer(r"^\| `(wapp_[a-z_]+)` \|", text, re.M)}
    # Documented as queried: a counter with its _total, a histogram by its own name.
    shown = {next(iter(names)) if len(names) == 1 else family for family, names in exported.items()}
    assert table == shown
    assert set(NAME.findall(text)) <= series(exported) | set(exported)


def test_the_grafana_dashboard_parses_and_queries_exported_metrics(
    exported: dict[str, set[str]],
) -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    queries = exprs(dashboard["panels"])
    assert len(queries) >= 10
    used = {name for query in queries for name in NAME.findall(query)}
    assert used <= series(exported), used - series(exported)
    assert "grafana-dashboard.json" in (DOCS / "monitoring.md").read_text(encoding="utf-8")


def test_the_alert_rules_parse_and_query_exported_metrics(exported: dict[str, set[str]]) -> None:
    rules = yaml.safe_load((DOCS / "prometheus-alerts.yml").read_text(encoding="utf-8"))
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    for required in (
        "WappSessionDown",
        "WappEngineRecycled",
        "WappWebhookBacklogGrowing",
        "WappEngineMemoryNearBudget",
    ):
        assert required in alerts, required
    assert alerts["WappSessionDown"]["for"] == "2m"
    for rule in alerts.values():
        used = set(NAME.findall(rule["expr"]))
        assert used, rule["alert"]
        assert used <= series(exported), (rule["alert"], used - series(exported))
    assert "prometheus-alerts.yml" in (DOCS / "monitoring.md").read_text(encoding="utf-8")
