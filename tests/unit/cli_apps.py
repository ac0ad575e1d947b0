"""Nodes for the ``resilient-task worker`` tests (imported by ``--app tests.unit.cli_apps:...``)."""

from __future__ import annotations

from resilient_task import ResilientTask

memory_node = ResilientTask()
"""A worker node on the in-memory store."""

database_node = ResilientTask(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
"""A worker node on PostgreSQL (never started by these tests)."""
