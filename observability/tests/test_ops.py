"""The ops stack: Grafana dashboards, Prometheus/Loki/collector configs, and a real Prometheus
scraping our /metrics on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.routing import Route

from genai_factory.observability.setup import TelemetryConfig, setup_telemetry

from .conftest import free_port, produce_traffic

OPS = Path(__file__).resolve().parents[1] / "ops"
DASHBOARDS = sorted((OPS / "grafana" / "dashboards").glob("*.json"))
PROVISIONED_UIDS = {"gf-prometheus", "gf-loki"}
# Panel types Grafana 11 ships with.
PANEL_TYPES = {
    "timeseries",
    "stat",
    "gauge",
    "bargauge",
    "table",
    "logs",
    "barchart",
    "heatmap",
    "text",
}
_METRIC_NAME = re.compile(r"\b((?:gen_ai|gf)_[a-z0-9_]+)\b")


@pytest.fixture(scope="module")
def exposed_series() -> set[str]:
    """Every series name our /metrics exposes after real traffic through the instrumentation."""

    async def run(tmp: Path) -> str:
        telemetry = setup_telemetry(TelemetryConfig(sqlite_path=tmp / "t.db"))
        assert telemetry.store is not None and telemetry.prometheus is not None
        await produce_traffic(telemetry, telemetry.cost_tracker(), requests=30)
        text = telemetry.prometheus.exposition().decode()
        telemetry.shutdown()
        return text

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        text = asyncio.run(run(Path(tmp)))
    return {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def metric_names(expr: str) -> set[str]:
    return {
        name
        for name in _METRIC_NAME.findall(expr)
        if not name.startswith(
            ("gen_ai_request_", "gen_ai_token_", "gf_team", "gf_guard_name", "gf_guard_decision")
        )
    }


@pytest.mark.unit
def test_there_is_a_dashboard_and_it_is_provisioned_in_compose() -> None:
    assert DASHBOARDS, "no Grafana dashboards"
    compose = (OPS.parent / "docker-compose.yml").read_text()
    for dashboard in DASHBOARDS:
        assert (
            f"./ops/grafana/dashboards/{dashboard.name}:/var/lib/grafana/dashboards/{dashboard.name}"
            in compose
        )
    provider = yaml.safe_load((OPS / "grafana/provisioning/dashboards/dashboards.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = yaml.safe_load(
        (OPS / "grafana/provisioning/datasources/datasources.yaml").read_text()
    )
    assert {s["uid"] for s in sources["datasources"]} == PROVISIONED_UIDS


@pytest.mark.unit
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboards_have_the_required_fields_and_query_real_series(
    path: Path, exposed_series: set[str]
) -> None:
    dashboard = json.loads(path.read_text())
    for field, kind in {"uid": str, "title": str, "schemaVersion": int, "panels": list, "time": dict,
                        "templating": dict, "version": int, "tags": list}.items():  # fmt: skip
        assert isinstance(dashboard.get(field), kind), field
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES and panel["title"]
        assert (
            set(panel["gridPos"]) == {"x", "y", "w", "h"}
            and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        )
        assert panel["datasource"]["uid"] in PROVISIONED_UIDS
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"] and target["expr"]
            if panel["datasource"]["uid"] == "gf-prometheus":
                missing = metric_names(target["expr"]) - exposed_series
                assert not missing, f"{panel['title']} queries series we never expose: {missing}"


@pytest.mark.unit
def test_recording_rules_use_real_series_and_promtool_accepts_the_configs(
    tmp_path: Path, exposed_series: set[str]
) -> None:
    rules = yaml.safe_load((OPS / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            names = {n for n in metric_names(rule["expr"]) if not n.startswith("genai:")}
            assert names <= exposed_series, names - exposed_series
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    config = (
        (OPS / "prometheus.yml")
        .read_text()
        .replace("/etc/prometheus/rules.yml", str(OPS / "rules.yml"))
    )
    (tmp_path / "prometheus.yml").write_text(config)
    checked = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout + checked.stderr


@pytest.mark.unit
def test_collector_and_loki_configs_are_complete() -> None:
    collector = yaml.safe_load((OPS / "otel-collector.yaml").read_text())
    for name, pipeline in collector["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in collector[kind], (
                    f"{name} uses undefined {kind[:-1]} {component}"
                )
    loki = yaml.safe_load((OPS / "loki.yaml").read_text())
    assert loki["auth_enabled"] is False and loki["server"]["http_listen_port"] == 3100
    assert loki["schema_config"]["configs"][0]["schema"] == "v13"
    assert loki["compactor"]["retention_enabled"] is True
    compose = yaml.safe_load((OPS.parent / "docker-compose.yml").read_text())
    assert "-config.file=/etc/loki/config.yaml" in compose["services"]["loki"]["command"]


@pytest.mark.e2e
@pytest.mark.slow
def test_a_real_prometheus_scrapes_our_metrics(tmp_path: Path, serve: Any) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("the Debian prometheus binary is not installed (apt-get install prometheus)")
    telemetry = setup_telemetry(TelemetryConfig(sqlite_path=tmp_path / "t.db"))
    assert telemetry.store is not None and telemetry.prometheus is not None
    asyncio.run(produce_traffic(telemetry, telemetry.cost_tracker(), requests=30))
    target = serve(Starlette(routes=[Route("/metrics", telemetry.prometheus.endpoint)]))
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "genai-factory", "static_configs": [{"targets": [target.url.removeprefix("http://")]}]}],
    }))  # fmt: skip
    process = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def query(expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5)
        response.raise_for_status()
        return list(response.json()["data"]["result"])

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if query('up{job="genai-factory"} == 1') and query(
                    "gen_ai_client_operation_duration_seconds_count"
                ):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                output = (
                    process.stdout.read().decode()
                    if process.poll() is not None and process.stdout
                    else ""
                )
                pytest.fail(f"prometheus never scraped the target: {output[-2000:]}")
            time.sleep(0.5)
        calls = query("sum(gen_ai_client_operation_duration_seconds_count)")
        assert float(calls[0]["value"][1]) >= 20
        by_model = {
            r["metric"]["gen_ai_request_model"]
            for r in query(
                'gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name="chat"}'
            )
        }
        assert by_model == {"gpt-4o-mini", "smollm2", "claude-3-5-haiku"}
        tokens = query("sum by (gen_ai_token_type) (gen_ai_client_token_usage_sum)")
        assert {r["metric"]["gen_ai_token_type"] for r in tokens} == {"input", "output"}
        p95 = query(
            "histogram_quantile(0.95, sum by (le) (gen_ai_client_operation_duration_seconds_bucket))"
        )
        assert 0 < float(p95[0]["value"][1]) < 1
        assert float(query("sum(gf_cache_hits_total)")[0]["value"][1]) == 7
        assert (
            query("gf_guard_verdicts_total")
            and query("gf_errors_total")
            and query("gf_spend_usd_total")
        )
        buckets = {
            r["metric"]["le"]
            for r in query('gen_ai_client_token_usage_bucket{gen_ai_token_type="input"}')
        }
        assert {"1.0", "4.0", "67108864.0", "+Inf"} <= buckets
    finally:
        process.terminate()
        process.wait(timeout=30)
        telemetry.shutdown()
