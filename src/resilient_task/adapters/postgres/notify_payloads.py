"""What :class:`PostgresNotifyTriggerer` sends: the channel name and the NOTIFY payloads.

One payload carries many task references, as a compact JSON array whose first element is the
format version::

    [1,["0190c5d1...",3,"send-email",null,5],["0190c5d2...",0,"ship",null,2]]

(id as 32 hex digits, version, type, sub_type, priority). Payloads are pure ASCII
(``ensure_ascii``), so their length in bytes is the same in every server encoding and no type
name can be unrepresentable; :func:`encode_payloads` packs references greedily into payloads
shorter than PostgreSQL's limit of 8000 bytes. The longest possible reference (250-character
type and sub-type, each character escaped) is about 3 KB, so one always fits.

Decoding never raises, whatever the text or bytes: a malformed payload (not JSON, nested too
deeply for the parser, longer than any notification, another version, an entry outside what a
stored task can hold -- see :mod:`resilient_task.adapters.task_references`) gives ``None`` so
the listener logs one line and moves on instead of stalling on a poison pill (anyone allowed to
connect can ``pg_notify`` the channel). :func:`malformed_reason` says why, fit for that line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from resilient_task.adapters.postgres.schema import PostgresSettings
from resilient_task.adapters.task_references import is_int, read_reference
from resilient_task.domain.task import BaseTask
from resilient_task.logtext import loggable

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "PAYLOAD_VERSION",
    "channel_name",
    "decode_payload",
    "encode_payloads",
    "malformed_reason",
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


def decode_payload(payload: str | bytes) -> list[BaseTask] | None:
    """The task references of ``payload`` in order, or ``None`` if it is malformed.

    Never raises. ``bytes`` are read as UTF-8.
    """
    found = _read(payload)
    return None if isinstance(found, str) else found


def malformed_reason(payload: str | bytes) -> str:
    """Why :func:`decode_payload` refuses ``payload``, and the payload, as one log-safe line."""
    found = _read(payload)
    reason = "it is well-formed" if not isinstance(found, str) else found
    return f"{reason}; payload: {loggable(payload)}"


def _read(payload: str | bytes) -> list[BaseTask] | str:
    if len(payload) > MAX_PAYLOAD_BYTES:
        return f"length {len(payload)} is over the limit of {MAX_PAYLOAD_BYTES}"
    try:
        text = payload.decode() if isinstance(payload, bytes) else payload
        document: Any = json.loads(text)
    except UnicodeDecodeError:
        return "not UTF-8"
    except (ValueError, RecursionError) as exc:  # RecursionError: "[" * 5000
        return f"not JSON ({type(exc).__name__})"
    if not isinstance(document, list) or not document or not _is_version(document[0]):
        return f"not a JSON array starting with version {PAYLOAD_VERSION}"
    tasks = []
    for number, entry in enumerate(document[1:], start=1):
        if not isinstance(entry, list) or len(entry) != 5:
            return f"entry {number} is not an array of 5 fields"
        task = read_reference(*entry)
        if isinstance(task, str):
            return f"entry {number}: {task}"
        tasks.append(task)
    return tasks


def _encode(task: BaseTask) -> str:
    entry = [task.id.hex, task.version, task.type, task.sub_type, task.priority]
    return json.dumps(entry, separators=(",", ":"))  # ensure_ascii: one byte per character


def _join(entries: list[str]) -> str:
    return f"{_HEADER},{','.join(entries)}]"


def _is_version(value: object) -> bool:
    return is_int(value) and value == PAYLOAD_VERSION
