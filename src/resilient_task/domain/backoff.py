"""The one exponential backoff schedule: ``first * multiplier**step``, capped.

Retry policies, the executor's completion retries and the triggerers' reconnects all wait
along it; each adds its own unit (timedelta or seconds) and jitter on top.
"""

from __future__ import annotations

import math

__all__ = ["capped_exponential"]


def capped_exponential(step: int, *, first: float, multiplier: float = 2.0, cap: float) -> float:
    """The wait before attempt ``step`` (0-based): ``first * multiplier**step``, at most ``cap``.

    Never overflows: a long series compares in log space and returns ``cap`` exactly. A
    non-positive ``first`` gives 0; a negative ``step`` counts as 0.
    """
    if first <= 0:
        return 0.0
    step = max(0, step)
    if cap <= 0 or math.log(first) + step * math.log(multiplier) >= math.log(cap):
        return cap
    return min(first * multiplier**step, cap)
