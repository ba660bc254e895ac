"""The Grafana dashboard and the Prometheus alert rules in k8s/ plot and watch real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from otpservice import metrics

MONITORING = Path(__file__).parents[2] / "k8s" / "monitoring"
_METRIC = re.compile(r"\botp_[a-z_]+")


def exported() -> set[str]:
    """Every series name otpservice exports (counters with _total, histograms' parts)."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if hasattr(value, "_type") and hasattr(value, "_name"):
            base = value._name
            if value._type == "counter":
                names.add(f"{base}_total")
            elif value._type == "histogram":
                names |= {f"{base}_bucket", f"{base}_count", f"{base}_sum"}
            else:
                names.add(base)
    return names


def test_alert_rules_are_complete_and_use_exported_metrics() -> None:
    rules = yaml.safe_load((MONITORING / "prometheus-rules.yaml").read_text())
    alerts = [r for group in rules["groups"] for r in group["rules"]]
    names = {a["alert"] for a in alerts}
    assert {
        "OtpFraudGuardTripped",
        "OtpConversionDrop",
        "OtpProviderErrors",
        "OtpOutboxBacklog",
    } <= names
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"]
        used = set(_METRIC.findall(alert["expr"]))
        assert used, alert["alert"]
        assert used <= exported(), (alert["alert"], used - exported())


def test_dashboard_panels_use_exported_metrics() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in _METRIC.findall(expr)}
    assert used <= exported(), used - exported()
    # Every metric the service exports is on the dashboard.
    plotted = {n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in used}
    families = {
        n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in exported()
    }
    assert families <= plotted, families - plotted
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
