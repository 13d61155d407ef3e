"""Cursor paging shared by the collections whose ids sort by time: newest first, the cursor is the last id."""

from __future__ import annotations

from typing import Any

from motor.motor_asyncio import AsyncIOMotorCollection
from pymongo import DESCENDING

from engineroom.store.errors import safe_to_repeat

#: Largest page any listing returns, whatever the caller asks.
MAX_PAGE_SIZE = 200


@safe_to_repeat
async def newest_first(
    collection: AsyncIOMotorCollection[dict[str, Any]], query: dict[str, Any], *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` documents older than ``cursor``, newest first, and whether more follow.

    Raises:
      StoreUnavailable: MongoDB failed.
    """
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    if cursor is not None:
        query = {**query, "_id": {"$lt": cursor}}
    found: list[dict[str, Any]] = (
        await collection.find(query).sort("_id", DESCENDING).limit(limit + 1).to_list(limit + 1)
    )
    return found[:limit], len(found) > limit
