"""What :class:`PostgresNotifyTriggerer` sends: the channel name and the NOTIFY payloads.

One payload carries many task references, as a compact JSON array whose first element is the
format version::

    [1,["0190c5d1...",3,"send-email",null,5],["0190c5d2...",0,"ship",null,2]]

(id as 32 hex digits, version, type, sub_type, priority). Payloads are pure ASCII
(``ensure_ascii``), so their length in bytes is the same in every server encoding and no type
name can be unrepresentable; :func:`encode_payloads` packs references greedily into payloads
shorter than PostgreSQL's limit of 8000 bytes. The longest possible reference (250-character
type and sub-type, each character escaped) is about 3 KB, so one always fits.

Decoding never raises: a malformed payload (not JSON, another version, a bad entry) gives
``None`` so the listener logs it and moves on instead of stalling on a poison pill.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from resilient_task.adapters.postgres.schema import PostgresSettings
from resilient_task.adapters.task_references import is_int, task_reference
from resilient_task.domain.task import BaseTask

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "PAYLOAD_VERSION",
    "channel_name",
    "decode_payload",
    "encode_payloads",
]

PAYLOAD_VERSION = 1
"""The first element of every payload this code writes, and the only one it reads."""
MAX_PAYLOAD_BYTES = 7999
"""PostgreSQL refuses NOTIFY payloads of 8000 bytes or more."""
_MAX_CHANNEL_BYTES = 63  # NAMEDATALEN - 1: pg_notify refuses longer, LISTEN would truncate
_HEADER = f"[{PAYLOAD_VERSION}"


def channel_name(settings: PostgresSettings) -> str:
    """The channel of one deployment: ``<schema>.<prefix>triggers``, e.g.

    ``public.resilient_task_triggers``. Two deployments in one database (another schema or
    table prefix) never see each other's triggers. A name over 63 bytes keeps its first 46
    characters and ends with a hash of the whole name, so it stays unique and usable.
    """
    name = f"{settings.schema}.{settings.prefix}triggers"
    if len(name.encode()) <= _MAX_CHANNEL_BYTES:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
    return f"{name[: _MAX_CHANNEL_BYTES - len(digest) - 1]}~{digest}"


def encode_payloads(tasks: Sequence[BaseTask], *, limit: int = MAX_PAYLOAD_BYTES) -> list[str]:
    """The payloads carrying ``tasks`` in order, as few as fit in ``limit`` bytes each."""
    payloads: list[str] = []
    entries: list[str] = []
    size = len(_HEADER) + 1  # "[1" ... "]"
    for task in tasks:
        entry = _encode(task)
        if entries and size + 1 + len(entry) > limit:
            payloads.append(_join(entries))
            entries, size = [], len(_HEADER) + 1
        entries.append(entry)
        size += 1 + len(entry)
    if entries:
        payloads.append(_join(entries))
    return payloads


def decode_payload(payload: str) -> list[BaseTask] | None:
    """The task references of ``payload`` in order, or ``None`` if it is malformed."""
    try:
        document: Any = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(document, list) or not document or not _is_version(document[0]):
        return None
    tasks = []
    for entry in document[1:]:
        task = _decode(entry)
        if task is None:
            return None
        tasks.append(task)
    return tasks


def _encode(task: BaseTask) -> str:
    entry = [task.id.hex, task.version, task.type, task.sub_type, task.priority]
    return json.dumps(entry, separators=(",", ":"))  # ensure_ascii: one byte per character


def _join(entries: list[str]) -> str:
    return f"{_HEADER},{','.join(entries)}]"


def _decode(entry: object) -> BaseTask | None:
    if not isinstance(entry, list) or len(entry) != 5:
        return None
    return task_reference(*entry)


def _is_version(value: object) -> bool:
    return is_int(value) and value == PAYLOAD_VERSION
