"""Targets, the JSON summary keys, and the readable table."""

from __future__ import annotations

from typing import Any

POLLING_INTERVAL_MS = 2000  # TaskResumerProperties().polling_interval, the default the worker uses


CPU_PER_TASK_US = 50
"""Issue 14: worker CPU per task in drain, NOTIFY and Kafka modes."""


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with the measured value and whether it was met (None: not measured).

    Rates are goals relative to ``c1``, the commit ceiling (single-row UPDATE commits per second
    from one client) measured in the same run, so that they travel between machines.
    """
    rows: list[dict[str, Any]] = []

    def add(name: str, value: Any, goal: str, met: bool | None) -> None:
        rows.append({"name": name, "value": value, "goal": goal, "met": met})

    c1 = r.get("commit_ceiling_per_s", {}).get("c1")

    def ratio(name: str, rate: int | None, factor: float) -> None:
        if rate is None:
            return
        value = round(rate / c1, 2) if c1 else None
        add(f"{name} (x c1)", value, f">= {factor} x c1" + (f" ({factor * c1:,.0f} /s)" if c1
            else ""), None if value is None else rate >= factor * c1)  # fmt: skip

    by_mode = r.get("add_per_s_by_mode", {})
    pg_add = by_mode.get("postgres", {})
    ratio("single add, postgres", pg_add.get("single"), 0.5)
    kafka_single = by_mode.get("postgres_kafka", {}).get("single")
    if kafka_single is not None and pg_add.get("single"):
        value = round(kafka_single / pg_add["single"], 2)
        add("single add, postgres_kafka (x postgres single add)", value, ">= 0.9", value >= 0.9)
    ratio("bulk add, postgres", pg_add.get("bulk"), 10)
    for mode, v in r.get("drain", {}).items():
        ratio(f"drain, {mode}", v["per_s"], 1.25)
        us = v["cpu_us_per_task"]["worker"]
        add(f"worker CPU per task, drain {mode} (us)", us, f"<= {CPU_PER_TASK_US}",
            us <= CPU_PER_TASK_US)  # fmt: skip
    for mode in ("postgres_notify", "postgres_kafka"):
        v = r.get("e2e", {}).get(mode)
        if v is not None:
            us = v["cpu_us_per_task"]["worker"]
            add(f"worker CPU per task, e2e {mode} (us)", us, f"<= {CPU_PER_TASK_US}",
                us <= CPU_PER_TASK_US)  # fmt: skip
    lat = r.get("latency_ms", {})
    if "postgres_notify" in lat:
        v = lat["postgres_notify"]
        add("latency call->start p50, postgres_notify (ms)", v["p50"], "<= 2.6", v["p50"] <= 2.6)
        add("latency call->start p99, postgres_notify (ms)", v["p99"], "<= 4.5", v["p99"] <= 4.5)
    if "postgres_kafka" in lat:
        v = lat["postgres_kafka"]
        add("latency call->start p99, postgres_kafka (ms)", v["p99"], "<= 6", v["p99"] <= 6)
    late = r.get("scheduled_lateness_ms")
    if late is not None:
        limit = POLLING_INTERVAL_MS + 50
        add("scheduled lateness p99 ms", late["p99"], f"<= {limit}", late["p99"] <= limit)
    rss = r.get("rss_growth_mb")
    if rss is not None:
        add("worker RSS growth MB", rss, "< 50", rss < 50)
    eo = r.get("exactly_once")
    add("exactly once (every run)", eo, "true", eo)
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(r: dict[str, Any]) -> str:
    """Markdown table: the measurements, then the targets."""
    lines = ["| measurement | value |", "|---|---|"]
    add = r.get("add_per_s_by_mode", {})
    for mode, v in add.items():
        for kind, what in (("single", "single (one commit each)"),
                           ("bulk", f"bulk (batches of {v.get('batch')})")):  # fmt: skip
            lines.append(f"| add, {what}, {mode} | {_fmt(v.get(kind))} /s{_cpu(v, kind)} |")
    for mode, v in r.get("drain", {}).items():
        lines.append(
            f"| drain by one worker, {mode} | {_fmt(v.get('per_s'))} /s; CPU per task: worker "
            f"{_fmt(v['cpu_us_per_task']['worker'])} µs, its PostgreSQL backends "
            f"{_fmt(v['cpu_us_per_task']['worker_postgres'])} µs |"
        )
    for mode, v in r.get("e2e", {}).items():
        per = v.get("cpu_us_per_task", {})
        cost = "; CPU per task: " + ", ".join(f"{k} {_fmt(x)} µs" for k, x in per.items())
        lines.append(
            f"| end to end, {mode} | {_fmt(v.get('per_s'))} /s ({v.get('seconds')} s; "
            f"exactly once: {_fmt(v.get('exactly_once'))}){cost if per else ''} |"
        )
    for mode, v in r.get("latency_ms", {}).items():
        lines.append(
            f"| latency before add call→handler start, {mode} | p50 {_fmt(v['p50'])} · p99 "
            f"{_fmt(v['p99'])} · max {_fmt(v['max'])} ms (add_task call p50 "
            f"{_fmt(v.get('add_call_p50'))} ms) |"
        )
    floor = r.get("kafka_floor_ms")
    if floor:
        f = floor["from_ack_ms"]
        lines.append(
            f"| bare aiokafka send-ack→receive (broker floor) | p50 {_fmt(f['p50'])} · "
            f"p99 {_fmt(f['p99'])} · max {_fmt(f['max'])} ms |"
        )
    late = r.get("scheduled_lateness_ms")
    if late:
        lines.append(
            f"| scheduled lateness ({late.get('count')} due at once), {late.get('mode')} | "
            f"p50 {_fmt(late['p50'])} · p99 {_fmt(late['p99'])} · max {_fmt(late['max'])} ms |"
        )
    for mode, v in r.get("rss", {}).items():
        lines.append(
            f"| worker RSS, {mode} ({_fmt(v.get('n'))} tasks) | warm {v['rss_warm_mb']:.1f} → "
            f"end {v['rss_end_mb']:.1f} MB (growth {v['growth_mb']:.1f}, peak "
            f"{v['rss_peak_mb']:.1f}) |"
        )
    ceiling = r.get("commit_ceiling_per_s")
    if ceiling:
        lines.append(
            f"| commit ceiling ({ceiling.get('tool')}) | 1 client {_fmt(ceiling['c1'])} /s · "
            f"16 clients {_fmt(ceiling['c16'])} /s |"
        )
        if ceiling.get("add_sql_c1"):
            lines.append(
                f"| add_task's SQL from 1 C client (pgbench, no Python) | "
                f"{_fmt(ceiling['add_sql_c1'])} /s |"
            )
    for section, error in r.get("errors", {}).items():
        lines.append(f"| {section} | FAILED: {error.splitlines()[0][:100]} |")
    lines += ["", "| target | value | goal | met |", "|---|---|---|---|"]
    for t in r.get("targets", []):
        lines.append(f"| {t['name']} | {_fmt(t['value'])} | {t['goal']} | {_fmt(t['met'])} |")
    return "\n".join(lines)


def _cpu(v: dict[str, Any], kind: str) -> str:
    cost = v.get(f"{kind}_cpu_us")
    if not cost:
        return ""
    client, postgres = _fmt(cost["client"]), _fmt(cost["postgres"])
    return f"; CPU per task: client {client} µs, PostgreSQL {postgres} µs"


def machine_lines(m: dict[str, Any]) -> str:
    pg = m.get("postgres", {})
    return "\n".join(
        [
            f"- CPU: {m.get('cpu')}, {m.get('cores')} cores; RAM {m.get('ram_gb')} GB; "
            f"{m.get('os')}",
            f"- Python {m.get('python')}; {', '.join(f'{k} {v}' for k, v in m.get('libraries', {}).items())}",  # noqa: E501
            f"- PostgreSQL {pg.get('version')}: fsync={pg.get('fsync')}, synchronous_commit="
            f"{pg.get('synchronous_commit')}, wal_sync_method={pg.get('wal_sync_method')}, "
            f"full_page_writes={pg.get('full_page_writes')} (shared_buffers="
            f"{pg.get('shared_buffers')}, commit_delay={pg.get('commit_delay')})",
            f"- Kafka protocol broker at {m.get('kafka_bootstrap')}; code at {m.get('git')}",
        ]
    )
