"""Targets, the JSON summary keys, and the readable table."""

from __future__ import annotations

from typing import Any

POLLING_INTERVAL_MS = 2000  # TaskResumerProperties().polling_interval, the default the worker uses


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with the measured value and whether it was met (None: not measured)."""
    rows: list[dict[str, Any]] = []

    def add(name: str, value: Any, goal: str, met: bool | None) -> None:
        rows.append({"name": name, "value": value, "goal": goal, "met": met})

    e2e = r.get("e2e_per_s", {}).get("postgres_kafka")
    add("e2e postgres_kafka tasks/s", e2e, ">= 7000", None if e2e is None else e2e >= 7000)
    bulk = r.get("add_per_s", {}).get("bulk")
    add("bulk add tasks/s", bulk, ">= 40000", None if bulk is None else bulk >= 40000)
    single = r.get("add_per_s", {}).get("single")
    c1 = r.get("commit_ceiling_per_s", {}).get("c1")
    goal = ">= 80% of c1" + (f" ({0.8 * c1:.0f})" if c1 else "")
    add(
        "single add tasks/s", single, goal,
        None if single is None or c1 is None else single >= 0.8 * c1,
    )  # fmt: skip
    for mode, lat in r.get("latency_ms", {}).items():
        add(f"latency p50 {mode} ms", lat["p50"], "<= 3", lat["p50"] <= 3)
        add(f"latency p99 {mode} ms", lat["p99"], "<= 6", lat["p99"] <= 6)
    late = r.get("scheduled_lateness_ms")
    limit = POLLING_INTERVAL_MS + 50
    add(
        "scheduled lateness p99 ms", None if late is None else late["p99"], f"<= {limit}",
        None if late is None else late["p99"] <= limit,
    )  # fmt: skip
    rss = r.get("rss_growth_mb")
    add("worker RSS growth MB", rss, "< 50", None if rss is None else rss < 50)
    eo = r.get("exactly_once")
    add("exactly once", eo, "true", eo)
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
        lines.append(f"| add, single (one commit each), {mode} | {_fmt(v.get('single'))} /s |")
        lines.append(f"| add, bulk (batches of {v.get('batch')}), {mode} | "
                     f"{_fmt(v.get('bulk'))} /s |")  # fmt: skip
    for mode, v in r.get("e2e", {}).items():
        lines.append(
            f"| end to end, {mode} | {_fmt(v.get('per_s'))} /s ({v.get('seconds')} s; "
            f"exactly once: {_fmt(v.get('exactly_once'))}) |"
        )
    for mode, v in r.get("latency_ms", {}).items():
        lines.append(
            f"| latency add→start, {mode} | p50 {_fmt(v['p50'])} · p99 {_fmt(v['p99'])} · "
            f"max {_fmt(v['max'])} ms |"
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
