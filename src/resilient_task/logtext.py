"""User-controlled strings made safe for one log line.

Task types, sub-types, unique keys, error texts and trigger payloads come from callers or from
the wire. Logged as they are, a newline forges log lines and a 100 KB value floods the log.
:func:`loggable` escapes control characters (the way ``repr`` does, without the quotes) and
cuts long values, saying how much was cut. Use it wherever such a value is interpolated into a
log message; ``extra=`` fields for structured logs may keep the raw value.
"""

from __future__ import annotations

__all__ = ["DEFAULT_LIMIT", "loggable"]

DEFAULT_LIMIT = 200
"""Characters of a value kept in a log line before it is cut."""


def loggable(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` as text fit for one log line: control characters escaped, at most ``limit``.

    Never raises: an object whose ``__str__`` raises is described by its type instead.
    """
    if isinstance(value, str):
        text = value
    elif isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value[: limit + 1]).decode("utf-8", "backslashreplace")
    else:
        try:
            text = str(value)
        except Exception as exc:
            text = f"<unprintable {type(value).__name__}: str() raised {type(exc).__name__}>"
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    if not text.isprintable():
        text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    if isinstance(value, bytes | bytearray | memoryview):
        cut = len(value) - limit
    return f"{text}...(+{cut} more)" if cut > 0 else text
