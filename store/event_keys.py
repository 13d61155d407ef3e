"""The replay keys of a stored event: one multikey index over them serves every routing key's replay.

An event is stored with ``keys``, one per routing key whose sockets hear it (``notifications.topics``), so a replay
is one range of one index (``replay``), and a recorded event maintains that index and the TTL's instead of one index
per kind of key (five): an event costs SecantusDB, which rewrites every index on each write, ~30 % less CPU. Each
key is a JSON array of its kind and parts, so no tenant or user id containing ``:`` can make one owner's key equal
another's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def _key(*parts: str) -> str:
    return json.dumps(parts, separators=(",", ":"))


def keys_of(fields: Mapping[str, Any]) -> list[str]:
    """The keys of an event with these stored fields: what each routing key's query used to match."""
    keys = [_key("tenant", fields["tenant_id"])]
    if fields.get("user_id") is not None:
        keys.append(_key("user", fields["tenant_id"], fields["user_id"]))
    if fields.get("job_id") is not None:
        keys.append(_key("job", fields["job_id"]))
    if fields.get("workflow_id") is not None:
        keys.append(_key("workflow", fields["workflow_id"]))
    if fields.get("audience") == "admins":
        keys.append(_key("queue"))
    return keys


def key_for(routing_key: str) -> str:
    """The key stored events carry for one of ``notifications.topics``' routing keys.

    Raises:
      ValueError: no stored event carries one for it.
    """
    kind, _, rest = routing_key.partition(":")
    if kind == "user":
        tenant_id, _, user_id = rest.partition(":")
        return _key("user", tenant_id, user_id)
    if kind in ("tenant", "job", "workflow"):
        return _key(kind, rest)
    if kind == "queue":
        return _key("queue")
    raise ValueError(f"no stored events under {routing_key!r}")
