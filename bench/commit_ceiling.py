"""The database's commit ceiling: single-row UPDATE commits per second from 1 and 16 clients.

pgbench when it is installed (``pgbench -n -M prepared -c C -j J -T S -f script`` on a
scratch table in a scratch schema); otherwise a psycopg loop with one autocommit connection
per thread. Only reads the server's settings, never changes them.

With pgbench it also measures ``add_sql_c1``: the statement a single ``add_task`` sends (one
task row and its payload row, one commit) from one C client on the real tables -- the add
rate with zero client overhead, to tell the database's share of a single add from Python's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any

import anyio

from bench.common import (
    PAYLOAD_BYTES,
    TABLE,
    Config,
    create_schema,
    drop_schema,
    libpq_url,
    pg_connect,
    schema_name,
)

ROWS = 1000


def _prepare(cfg: Config, schema: str) -> None:
    anyio.run(create_schema, cfg, schema)  # the resilient-task tables, for add_sql_c1
    with pg_connect(cfg.database_url) as conn:
        conn.execute(f'CREATE TABLE "{schema}".counters (id int PRIMARY KEY, n bigint NOT NULL)')
        conn.execute(
            f'INSERT INTO "{schema}".counters SELECT g, 0 FROM generate_series(1, {ROWS}) g'
        )
        conn.execute(f'VACUUM ANALYZE "{schema}".counters')


def _update_script(schema: str) -> str:
    return f'\\set id random(1, {ROWS})\nUPDATE "{schema}".counters SET n = n + 1 WHERE id = :id;\n'


def _add_script(schema: str) -> str:
    data = PAYLOAD_BYTES.hex()
    return (
        f'WITH t AS (INSERT INTO "{schema}".{TABLE} (id, type, status, version, priority, '
        "next_event_time, processing_tries_count, recovery_count, created_at, updated_at) "
        "VALUES (gen_random_uuid(), 'bench', 'SUBMITTED', 0, 5, now() + interval '1 minute', "
        "0, 0, now(), now()) ON CONFLICT DO NOTHING RETURNING id) "
        f'INSERT INTO "{schema}".resilient_task_task_data (task_id, data_format, data) '
        f"SELECT id, 0, '\\x{data}'::bytea FROM t;\n"
    )


def _pgbench(cfg: Config, script_text: str, clients: int, seconds: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script_text)
        script = f.name
    cmd = [
        "pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)),
        "-T", str(seconds), "-f", script, libpq_url(cfg.database_url),
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
    out: dict[str, Any] = {"seconds": seconds}
    _prepare(cfg, schema)
    try:
        if shutil.which("pgbench"):
            out["tool"] = "pgbench"
            out["c1"] = round(_pgbench(cfg, _update_script(schema), 1, seconds))
            out["c16"] = round(_pgbench(cfg, _update_script(schema), 16, seconds))
            out["add_sql_c1"] = round(_pgbench(cfg, _add_script(schema), 1, seconds))
        else:
            out["tool"] = "psycopg"
            out["c1"] = round(_psycopg(cfg, schema, 1, seconds))
            out["c16"] = round(_psycopg(cfg, schema, 16, seconds))
    finally:
        drop_schema(cfg, schema)
    return out
