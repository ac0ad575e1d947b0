"""The database's commit ceiling: single-row UPDATE commits per second from 1 and 16 clients.

pgbench when it is installed (``pgbench -n -c C -j J -T S -f script`` on a scratch table in a
scratch schema); otherwise a psycopg loop with one autocommit connection per thread. Only
reads the server's settings, never changes them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any

from bench.common import Config, drop_schema, libpq_url, pg_connect, schema_name

ROWS = 1000


def _prepare(cfg: Config, schema: str) -> None:
    with pg_connect(cfg.database_url) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".counters (id int PRIMARY KEY, n bigint NOT NULL)')
        conn.execute(
            f'INSERT INTO "{schema}".counters SELECT g, 0 FROM generate_series(1, {ROWS}) g'
        )
        conn.execute(f'VACUUM ANALYZE "{schema}".counters')


def _pgbench(cfg: Config, schema: str, clients: int, seconds: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(f"\\set id random(1, {ROWS})\n")
        f.write(f'UPDATE "{schema}".counters SET n = n + 1 WHERE id = :id;\n')
        script = f.name
    cmd = [
        "pgbench", "-n", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
        "-f", script, libpq_url(cfg.database_url),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    if match is None:
        raise RuntimeError(f"cannot read pgbench output:\n{out.stdout}\n{out.stderr}")
    return float(match.group(1))


def _psycopg(cfg: Config, schema: str, clients: int, seconds: int) -> float:
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        import random

        with pg_connect(cfg.database_url) as conn:
            sql = f'UPDATE "{schema}".counters SET n = n + 1 WHERE id = %s'
            while time.monotonic() < stop:
                conn.execute(sql, (random.randint(1, ROWS),))
                counts[i] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return sum(counts) / (time.monotonic() - started)


def run(cfg: Config, *, seconds: int = 10) -> dict[str, Any]:
    schema = schema_name(cfg, "ceiling")
    tool = "pgbench" if shutil.which("pgbench") else "psycopg"
    measure = _pgbench if tool == "pgbench" else _psycopg
    _prepare(cfg, schema)
    try:
        c1 = measure(cfg, schema, 1, seconds)
        c16 = measure(cfg, schema, 16, seconds)
    finally:
        drop_schema(cfg, schema)
    return {"c1": round(c1), "c16": round(c16), "tool": tool, "seconds": seconds}
