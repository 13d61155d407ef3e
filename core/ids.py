"""Identifiers: URL-safe, time-sortable, 80 random bits (ULID layout, Crockford base32)."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from datetime import datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: 48 bits of milliseconds + 80 random bits = 128 bits = 26 base32 characters.
ID_LENGTH = 26


_last = [0, 0]  # the last id's milliseconds and random part, so ids made within one millisecond still ascend
_lock = threading.Lock()


def new_id(now_ms: int | None = None) -> str:
    """A new id that sorts after every id this process made before (ULID's monotonic rule: within one
    millisecond the random part counts up), and after ids other processes made in earlier milliseconds."""
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if millis <= _last[0] and now_ms is None:
            millis, random_part = _last[0], (_last[1] + 1) & ((1 << 80) - 1)
        else:
            random_part = secrets.randbits(80)
        _last[0], _last[1] = millis, random_part
    return _encode((millis << 80) | random_part)


def id_floor(at: datetime) -> str:
    """The smallest id of the millisecond ``at``: ``_id >= id_floor(t)`` selects what was made from ``t`` on."""
    return _encode(int(at.timestamp() * 1000) << 80)


def _encode(value: int) -> str:
    chars = []
    for _ in range(ID_LENGTH):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_valid_id(value: str) -> bool:
    return len(value) == ID_LENGTH and all(char in _ALPHABET for char in value)


def process_identity() -> str:
    """Names this process in leases and job records: host, pid and a random suffix (pids get reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
