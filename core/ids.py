"""Identifiers: URL-safe, time-sortable, 80 random bits (ULID layout, Crockford base32)."""

from __future__ import annotations

import os
import secrets
import socket
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: 48 bits of milliseconds + 80 random bits = 128 bits = 26 base32 characters.
ID_LENGTH = 26


def new_id(now_ms: int | None = None) -> str:
    """A new id that sorts after ids made in earlier milliseconds."""
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    value = (millis << 80) | secrets.randbits(80)
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
