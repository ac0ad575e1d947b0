"""The one place where SQLAlchemy and psycopg exceptions become resilient-task errors.

Every database call of this adapter runs inside :func:`translate_errors`::

    data error (SQLSTATE 22xxx, 54000: too long, out of range)  -> ValidationError
    serialization failure, deadlock, statement or lock timeout  -> BackendError(transient=True)
    lost or refused connection, pool timeout, server shutdown,
    any other OperationalError / InterfaceError                 -> BackendUnavailableError
    anything else from the driver or SQLAlchemy                 -> BackendError(transient=False)

The original exception stays reachable as ``__cause__``. Messages carry the server's message
and SQLSTATE but never the statement's parameters (they may hold payloads).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import sqlalchemy.exc as sa_exc

from resilient_task.errors import (
    BackendError,
    BackendUnavailableError,
    ResilientTaskError,
    ValidationError,
)

__all__ = ["translate", "translate_errors"]

_DRIVER_ERRORS = (sa_exc.SQLAlchemyError, psycopg.Error, OSError)
_RETRYABLE_SQLSTATES = ("40001", "40P01", "57014", "55P03")
_INVALID_DATA_SQLSTATES = ("54000",)


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Re-raise any driver exception of the block as a :class:`ResilientTaskError`.

    Args:
        action: what was being done, for the message ("insert tasks", "grab tasks").
    """
    try:
        yield
    except _DRIVER_ERRORS as exc:
        raise translate(exc, action) from exc


def translate(exc: BaseException, action: str) -> ResilientTaskError:
    """The resilient-task error for driver exception ``exc`` raised while doing ``action``."""
    if isinstance(exc, sa_exc.TimeoutError):
        return BackendUnavailableError(
            f"PostgreSQL: cannot {action}: no pooled connection became free in time ({exc})"
        )
    orig: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or ""
    detail = _describe(orig, sqlstate)
    invalid = sqlstate.startswith("22") or sqlstate in _INVALID_DATA_SQLSTATES
    if invalid or isinstance(orig, psycopg.DataError):  # NUL in text is refused client-side
        return ValidationError(f"PostgreSQL rejected a value: cannot {action}: {detail}")
    if sqlstate in _RETRYABLE_SQLSTATES:
        return BackendError(f"PostgreSQL: cannot {action}: {detail}", transient=True)
    if _is_unavailable(exc, orig, sqlstate):
        return BackendUnavailableError(f"PostgreSQL unavailable: cannot {action}: {detail}")
    hint = ""
    if sqlstate in ("42P01", "3F000"):
        hint = " (are the tables missing? run `resilient-task db upgrade`)"
    return BackendError(f"PostgreSQL: cannot {action}: {detail}{hint}", transient=False)


def _is_unavailable(exc: BaseException, orig: BaseException, sqlstate: str) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if sqlstate.startswith(("08", "53", "57P")):
        return True
    return isinstance(
        exc,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.DisconnectionError
        | psycopg.OperationalError
        | psycopg.InterfaceError
        | OSError,
    ) or isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError | OSError)


def _describe(orig: BaseException, sqlstate: str) -> str:
    # str() of a psycopg error is the server's message (plus DETAIL lines); SQLAlchemy's own
    # str() would append the statement and its parameters, so it is never used here.
    lines = str(orig).strip().splitlines() or [type(orig).__name__]
    message = "; ".join(line.strip() for line in lines[:2] if line.strip())
    return f"{message} [{type(orig).__name__}{f', SQLSTATE {sqlstate}' if sqlstate else ''}]"
