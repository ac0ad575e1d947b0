"""The trigger message: a small, versioned JSON document carrying a ``BaseTask``.

Example (version 1)::

    {"v":1,"id":"0190...","version":3,"type":"send-email","sub_type":null,"priority":5}

Decoding never raises, whatever the bytes: anything malformed (not UTF-8 or not JSON, nested
too deeply for the parser, over :data:`MAX_MESSAGE_BYTES`, another ``v``, a field outside what
a stored task can hold -- see :mod:`resilient_task.adapters.task_references`) gives ``None``,
so the consumer logs one line and commits past it instead of stalling on a poison pill.
:func:`malformed_reason` says why, fit for that log line. Readers ignore unknown fields, so
fields can be added without bumping ``v``.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring
from typing import Any

from resilient_task.adapters.task_references import is_int, read_reference
from resilient_task.domain.task import BaseTask
from resilient_task.logtext import loggable

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MESSAGE_VERSION",
    "decode_trigger",
    "encode_trigger",
    "malformed_reason",
]

MESSAGE_VERSION = 1
"""The ``v`` field this code writes and the only one it reads."""
MAX_MESSAGE_BYTES = 16 * 1024
"""Longer values are refused unparsed. The longest trigger this code writes (250-character
type and sub-type, each character escaped) is about 3 KB."""


def encode_trigger(task: BaseTask) -> bytes:
    """The message value for ``task``: compact UTF-8 JSON.

    The bytes ``json.dumps(document, separators=(",", ":"), ensure_ascii=False)`` gives,
    written directly (a third of its time: one per task added): the strings through json's own
    escaping.
    """
    sub_type = "null" if task.sub_type is None else encode_basestring(task.sub_type)
    return (
        f'{{"v":{MESSAGE_VERSION},"id":"{task.id}","version":{task.version:d},'
        f'"type":{encode_basestring(task.type)},"sub_type":{sub_type},'
        f'"priority":{task.priority:d}}}'
    ).encode()


def decode_trigger(value: bytes | None) -> BaseTask | None:
    """The task a message value refers to, or ``None`` if the value is malformed. Never raises."""
    found = _read(value)
    return found if isinstance(found, BaseTask) else None


def malformed_reason(value: bytes | None) -> str:
    """Why :func:`decode_trigger` refuses ``value``, and the value, as one log-safe line."""
    found = _read(value)
    reason = "it is well-formed" if isinstance(found, BaseTask) else found
    return f"{reason}; value: {loggable(value)}"


def _read(value: bytes | None) -> BaseTask | str:
    if not value:
        return "empty value"
    if len(value) > MAX_MESSAGE_BYTES:
        return f"{len(value)} bytes, over the limit of {MAX_MESSAGE_BYTES}"
    try:
        document: Any = json.loads(value.decode())  # str: skips json's encoding sniffing
    except UnicodeDecodeError:
        return "not UTF-8"
    except (ValueError, RecursionError) as exc:  # RecursionError: b"[" * 5000
        return f"not JSON ({type(exc).__name__})"
    if not isinstance(document, dict):
        return f"not a JSON object but {type(document).__name__}"
    v = document.get("v")
    if not (is_int(v) and v == MESSAGE_VERSION):  # "v": true == 1 and 1.0 == 1: refused
        return f"unknown message version {loggable(v, 40)}"
    task_id, version, type_ = document.get("id"), document.get("version"), document.get("type")
    sub_type, priority = document.get("sub_type"), document.get("priority", 5)
    return read_reference(task_id, version, type_, sub_type, priority)
