"""PostgreSQL for the integration tests.

``database_url`` (session-scoped) comes from ``RESILIENT_TASK_TEST_DATABASE_URL``; without it a
throw-away testcontainers PostgreSQL is started when a Docker engine answers; otherwise the
tests are skipped -- except under ``CI=true``, where a missing database fails the run.

:func:`isolated_schema` gives each test its own freshly migrated schema, dropped afterwards,
so tests never see each other's rows and may run against a shared database.
"""

from __future__ import annotations

import gc
import importlib
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import NoReturn

import anyio
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from resilient_task.adapters.postgres import PostgresSettings, upgrade
from resilient_task.adapters.postgres.engine import safe_url

__all__ = [
    "ALLOW_RESTART_ENV",
    "DATABASE_URL_ENV",
    "database_url",
    "drop_schema",
    "isolated_schema",
    "require_restart_allowed",
    "settings",
    "terminate_backends",
]

DATABASE_URL_ENV = "RESILIENT_TASK_TEST_DATABASE_URL"
ALLOW_RESTART_ENV = "RESILIENT_TASK_TEST_ALLOW_PG_RESTART"
_CONNECT_TIMEOUT = 3
_IMAGE = "postgres:16-alpine"
_DOCKER_SOCKET = "/var/run/docker.sock"


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{message} (CI=true: integration tests must run)", pytrace=False)
    pytest.skip(message)


def _connect_problem(url: str) -> str | None:
    """Why ``url`` cannot be connected to within a few seconds, or None."""
    try:
        parsed = sa.make_url(url)
        with psycopg.connect(
            host=parsed.host,
            port=parsed.port,
            user=parsed.username,
            password=parsed.password,
            dbname=parsed.database,
            connect_timeout=_CONNECT_TIMEOUT,
        ) as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, sa.exc.ArgumentError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def require_restart_allowed() -> None:
    """Skip the calling test unless ``RESILIENT_TASK_TEST_ALLOW_PG_RESTART=1``.

    For tests that restart the whole local PostgreSQL cluster behind the test URL: a developer
    running ``make test`` against their own cluster is never surprised by a restart; ``.ci/run``
    sets the variable.
    """
    if os.environ.get(ALLOW_RESTART_ENV, "").strip() != "1":
        pytest.skip(f"restarts the PostgreSQL cluster: set {ALLOW_RESTART_ENV}=1 to allow it")


def _docker_problem() -> str | None:
    """Why no Docker engine answers, or None."""
    if not os.environ.get("DOCKER_HOST") and not os.path.exists(_DOCKER_SOCKET):
        return f"DOCKER_HOST is not set and there is no {_DOCKER_SOCKET}"
    docker = importlib.import_module("docker")  # untyped; comes with testcontainers
    problem: str | None = None
    with warnings.catch_warnings():
        # docker-py leaves its socket to the garbage collector when the engine does not answer.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=_CONNECT_TIMEOUT)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        gc.collect()
    return problem


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A ``postgresql+psycopg://`` URL of a reachable PostgreSQL for this test session."""
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        problem = _connect_problem(url)
        if problem:
            _unavailable(f"{DATABASE_URL_ENV}={safe_url(url)} is not reachable: {problem}")
        yield url
        return
    problem = _docker_problem()
    if problem:
        _unavailable(
            f"no PostgreSQL for integration tests: set {DATABASE_URL_ENV} "
            f"(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) or start Docker ({problem})"
        )
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer(_IMAGE, driver="psycopg") as container:
        yield str(container.get_connection_url())


async def drop_schema(url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it."""
    engine = create_async_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await engine.dispose()


@asynccontextmanager
async def isolated_schema(
    url: str, *, migrate: bool = True, **settings: object
) -> AsyncIterator[PostgresSettings]:
    """A new schema (random name) migrated to the current version, dropped on exit."""
    schema = f"rt_test_{uuid.uuid4().hex[:12]}"
    prefix = str(settings.pop("prefix", "resilient_task_"))
    result = PostgresSettings(schema=schema, prefix=prefix, **settings)  # type: ignore[arg-type]
    try:
        if migrate:
            await upgrade(url, schema=schema, prefix=prefix)
        yield result
    finally:
        await drop_schema(url, schema)


async def terminate_backends(
    url: str, application_name: str, *, prefix: bool = False, wait: bool = False
) -> int:
    """Kill the server processes of this database's connections called ``application_name``.

    With ``prefix``, every name starting with it; with ``wait``, return only once they are gone
    from ``pg_stat_activity`` (at most 2 s). Returns how many were killed.
    """
    pattern = application_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    params = {"name": pattern + ("%" if prefix else "")}
    ours = (
        "FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND application_name LIKE :name"
    )
    engine = create_async_engine(url, poolclass=sa.NullPool)
    try:
        async with engine.connect() as conn:
            killed = await conn.scalar(
                sa.text(f"SELECT count(pg_terminate_backend(pid)) {ours}"), params
            )
            for _ in range(100 if wait else 0):
                await conn.commit()  # a new transaction sees fresh activity statistics
                if not await conn.scalar(sa.text(f"SELECT count(*) {ours}"), params):
                    break
                await anyio.sleep(0.02)
    finally:
        await engine.dispose()
    return int(killed or 0)


@pytest.fixture
async def settings(database_url: str) -> AsyncIterator[PostgresSettings]:
    """A test's own freshly migrated schema (:func:`isolated_schema`)."""
    async with isolated_schema(database_url) as result:
        yield result
