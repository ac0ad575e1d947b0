"""The trigger message: a small, versioned JSON document carrying a ``BaseTask``.

Example (version 1)::

    {"v":1,"id":"0190...","version":3,"type":"send-email","sub_type":null,"priority":5}

Decoding never raises: anything malformed (not JSON, another ``v``, a bad id, wrong types)
gives ``None`` so the consumer can log it and move past it instead of stalling on a poison pill.
Readers ignore unknown fields, so fields can be added without bumping ``v``.
"""

from __future__ import annotations

import json
from typing import Any

from resilient_task.adapters.task_references import task_reference
from resilient_task.domain.task import BaseTask

__all__ = ["MESSAGE_VERSION", "decode_trigger", "encode_trigger"]

MESSAGE_VERSION = 1
"""The ``v`` field this code writes and the only one it reads."""


def encode_trigger(task: BaseTask) -> bytes:
    """The message value for ``task``: compact UTF-8 JSON."""
    document = {
        "v": MESSAGE_VERSION,
        "id": str(task.id),
        "version": task.version,
        "type": task.type,
        "sub_type": task.sub_type,
        "priority": task.priority,
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def decode_trigger(value: bytes | None) -> BaseTask | None:
    """The task a message value refers to, or ``None`` if the value is malformed."""
    if not value:
        return None
    try:
        document: Any = json.loads(value.decode())  # str: skips json's encoding sniffing
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict) or document.get("v") != MESSAGE_VERSION:
        return None
    task_id, version, type_ = document.get("id"), document.get("version"), document.get("type")
    sub_type, priority = document.get("sub_type"), document.get("priority", 5)
    return task_reference(task_id, version, type_, sub_type, priority)
