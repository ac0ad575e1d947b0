"""CPU time of a process and of the PostgreSQL backends serving it, from ``/proc``.

The worker's CPU per task is its process time (user + system, every thread) over the tasks it
ran. PostgreSQL's share is the CPU of the server processes serving that process's connections:
the process's TCP sockets (``/proc/<pid>/fd`` -> socket inodes -> ``/proc/net/tcp``) give its
local ports, and ``pg_stat_activity.client_port`` names the backend serving each. Backends are
read at the start and at the end of a measurement; one that closed in between (a pool overflow
connection) is missed, one that opened in between counts from zero.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads); NaN when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _local_ports(pid: int) -> list[int]:
    inodes = _socket_inodes(pid)
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[9] in inodes:
                ports.append(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def backends_of(conn: Any, pids: list[int]) -> list[int]:
    """PostgreSQL backend pids serving the TCP connections of processes ``pids``."""
    ports = [port for pid in pids for port in _local_ports(pid)]
    if not ports:
        return []
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s) "
        "AND client_addr IN ('127.0.0.1', '::1')",
        (ports,),
    ).fetchall()
    return [int(r[0]) for r in rows]


class Meter:
    """CPU seconds of some processes and of their PostgreSQL backends between start and stop.

    :meth:`stop` gives ``<name>`` (the process) and ``<name>_postgres`` (its backends) for
    every named process.
    """

    def __init__(self, conn: Any, pids: dict[str, int]) -> None:
        self._conn, self._pids = conn, pids
        self._start: dict[str, float] = {}
        self._backends: dict[str, dict[int, float]] = {}

    def _sample_backends(self) -> dict[str, dict[int, float]]:
        return {
            name: {b: process_seconds(b) for b in backends_of(self._conn, [pid])}
            for name, pid in self._pids.items()
        }

    def start(self, at: dict[str, float] | None = None) -> None:
        """Start; ``at`` gives a process's CPU seconds read earlier (e.g. by itself)."""
        self._start = {name: process_seconds(pid) for name, pid in self._pids.items()}
        self._start.update(at or {})
        self._backends = self._sample_backends()

    def stop(self) -> dict[str, float]:
        """CPU seconds since :meth:`start` per process and per process's backends."""
        out: dict[str, float] = {}
        end = self._sample_backends()
        for name, pid in self._pids.items():
            out[name] = round(process_seconds(pid) - self._start[name], 3)
            before = self._backends.get(name, {})
            out[f"{name}_postgres"] = round(
                sum(v - before.get(b, 0.0) for b, v in end[name].items()), 3
            )
        return out


def per_task_us(seconds: float, n: int) -> float:
    return round(seconds / n * 1e6, 1)
