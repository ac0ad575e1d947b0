"""deploy/prometheus/alerts.yml is a rule file promtool would accept (its structure checked)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from resilient_task.adapters.prometheus.observer import PREFIX

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
_RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
# Every metric the rules read, and where it comes from: a rule on a misspelt name never fires.
_KNOWN = {
    "up",
    f"{PREFIX}tasks",
    f"{PREFIX}oldest_overdue_seconds",
    f"{PREFIX}task_queue_delay_seconds_count",
    f"{PREFIX}dependency_up",
    f"{PREFIX}ready",
    f"{PREFIX}cluster_gauges_updated_timestamp_seconds",
    f"{PREFIX}kafka_consumer_lag",
}


def load() -> dict[str, Any]:
    data = yaml.safe_load(RULES.read_text())
    assert isinstance(data, dict)
    return data


def rules() -> list[dict[str, Any]]:
    return [rule for group in load()["groups"] for rule in group["rules"]]


def balanced(text: str) -> bool:
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for char in text:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return all(v == 0 for v in depth.values())


def test_the_file_has_groups_with_unique_names_and_rules() -> None:
    data = load()
    assert set(data) == {"groups"}
    names = [group["name"] for group in data["groups"]]
    assert len(names) == len(set(names))
    for group in data["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}
        assert group["rules"]


def test_every_rule_is_a_well_formed_alert() -> None:
    seen = set()
    for rule in rules():
        assert set(rule) <= _RULE_KEYS, rule
        assert _NAME.match(rule["alert"]), rule["alert"]
        assert rule["alert"] not in seen
        seen.add(rule["alert"])
        assert isinstance(rule["expr"], str)
        assert rule["expr"].strip()
        assert balanced(rule["expr"]), rule["expr"]
        assert _DURATION.match(str(rule.get("for", "0s"))), rule.get("for")
        for key, value in {**rule.get("labels", {}), **rule.get("annotations", {})}.items():
            assert _LABEL.match(key), key
            assert isinstance(value, str)
            assert balanced(value.replace("$value", "")), value  # template braces close


def test_the_rules_read_only_metrics_the_nodes_export() -> None:
    words = set()
    for rule in rules():
        without_strings = re.sub(r'"[^"]*"', '""', rule["expr"])
        without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
        words |= set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    functions_and_keywords = {
        "max", "sum", "by", "rate", "and", "or", "on", "time", "status", "type", "job", "topic",
    }  # fmt: skip
    assert words - functions_and_keywords == _KNOWN


def test_the_alerts_the_issue_asks_for_are_there() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in rules()}
    assert 'status="ERROR"' in exprs["ResilientTaskErrorTasks"]
    assert "by (type)" in exprs["ResilientTaskErrorTasks"]
    assert "oldest_overdue_seconds" in exprs["ResilientTaskSubmittedOverdue"]
    assert "queue_delay_seconds_count" in exprs["ResilientTaskBacklogWithoutGrabs"]
    assert "ResilientTaskNodeNotReady" in exprs
