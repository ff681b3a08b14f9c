"""The Grafana dashboard and the Prometheus alert rules in deploy/: promtool (Debian's prometheus package, installed
by scripts/setup) checks the rules and the scrape config and runs the rules' unit tests; every metric they name
is one hallfleet exports (the deployment-guide test scrapes the real consumer, API and agent and checks the same
names against what they serve)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "hallfleet.json"
PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "hallfleet-alerts.yml"
_NAME = re.compile(r"\b(hallfleet_[a-z0-9_]+)\b")
# What an operator asked for (issue 21): each must be one of the rules.
WANTED_ALERTS = {
    "HallfleetConsumerDown",
    "HallfleetIngestStalled",
    "HallfleetDeadLettersRising",
    "HallfleetBrokerDroppingMessages",
    "HallfleetStoreRetrying",
    "HallfleetDevicesOffline",
}


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in data["panels"] for t in p["targets"]]


def rule_exprs() -> list[str]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r["expr"] for g in data["groups"] for r in g["rules"]]


def metric_names_used() -> set[str]:
    """Every hallfleet metric the dashboard and the rules name (label values such as site names never match)."""
    return {m for expr in dashboard_exprs() + rule_exprs() for m in _NAME.findall(expr)}


def exposed_names(exposition: str) -> set[str]:
    """Sample names in a /metrics answer (counters appear with _total, as PromQL must name them)."""
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: run scripts/setup (Debian's prometheus package ships it)"
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)


def test_promtool_accepts_the_alert_rules_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "hallfleet-alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("x" * 32)
    text = (PROMETHEUS / "prometheus.yml").read_text().replace("/etc/prometheus/hallfleet-metrics-token", str(token))
    (tmp_path / "prometheus.yml").write_text(text)
    shutil.copy(RULES, tmp_path / RULES.name)
    checked = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_cover_what_an_operator_asked_for_and_each_says_what_to_do() -> None:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rules = {r["alert"]: r for g in data["groups"] for r in g["rules"]}
    assert set(rules) >= WANTED_ALERTS, WANTED_ALERTS - set(rules)
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "major", "minor"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_expression_names_a_hallfleet_metric_and_the_dashboard_is_importable(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else rule_exprs()
    assert exprs and all(_NAME.search(e) or "up{" in e for e in exprs)
    if source == "dashboard":
        data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        assert data["uid"] and len({p["id"] for p in data["panels"]}) == len(data["panels"])
        assert all(t["datasource"]["uid"] == "${datasource}" for p in data["panels"] for t in p["targets"])
