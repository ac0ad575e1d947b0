"""Time-ordered task ids (UUIDv7, RFC 9562) so inserts stay local in the primary-key index."""

from __future__ import annotations

import os
import threading
import time
from uuid import UUID

__all__ = ["uuid7"]

_last_ms = 0
_counter = 0
_lock = threading.Lock()
_POOL_BYTES = 4096
_pool = b""  # random bytes drawn from the OS in blocks: one syscall per ~400 ids, not two per id
_used = 0


def _forget_pool() -> None:
    """A forked child must not reuse its parent's random bytes (the two would make equal ids)."""
    global _pool, _used
    _pool, _used = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def _random(n: int) -> int:
    global _pool, _used
    if _used + n > len(_pool):
        _pool, _used = os.urandom(_POOL_BYTES), 0
    start, _used = _used, _used + n
    return int.from_bytes(_pool[start:_used])


def uuid7() -> UUID:
    """A new UUIDv7: 48-bit Unix milliseconds, then a 12-bit counter and random bits.

    Ids made in one process are strictly increasing, even within one millisecond.
    """
    with _lock:
        return _next()


def _next() -> UUID:
    global _last_ms, _counter
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        _counter += 1
        if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
            _last_ms += 1
            _counter = 0
        ms = _last_ms
    else:
        _last_ms = ms
        _counter = _random(2) & 0x3FF  # leave head-room to count up
    rand = _random(8) & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | _counter << 64 | 0b10 << 62 | rand
    return UUID(int=value)
