"""What the numbers were measured on: CPU, RAM, Python, libraries, PostgreSQL durability."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

from bench.common import REPO, Config, pg_connect

DURABILITY = ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes")
OTHER = ("shared_buffers", "max_connections", "wal_level", "commit_delay")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return float("nan")


def _git() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + (" (src/ has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def collect(cfg: Config) -> dict[str, Any]:
    postgres: dict[str, Any] = {}
    with pg_connect(cfg.database_url) as conn:
        postgres["version"] = conn.execute("SHOW server_version").fetchone()[0]
        for name in DURABILITY + OTHER:
            postgres[name] = conn.execute(f"SHOW {name}").fetchone()[0]
    libs = {}
    for name in ("resilient-task", "sqlalchemy", "psycopg", "aiokafka", "anyio"):
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgres": postgres,
        "kafka_bootstrap": cfg.kafka_bootstrap,
        "libraries": libs,
        "git": _git(),
    }
