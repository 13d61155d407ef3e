"""Durations as operators type them on the command line: ``90s``, ``15m``, ``12h``, ``7d``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def parse_duration(text: str) -> timedelta:
    """``7d`` → 7 days.

    Raises:
      ValueError: not a whole number followed by one of s, m, h, d, w.
    """
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 12h, 7d or 2w")
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})
