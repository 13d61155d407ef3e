"""Where mongomock (the in-memory MongoDB some store tests run on) differs from MongoDB in a way the product meets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mongomock
from pymongo import IndexModel


def _create_indexes(self: mongomock.Collection[Any], indexes: Sequence[IndexModel], session: Any = None) -> list[str]:
    """Each index with all of its options, as ``create_index`` takes them: mongomock's own ``create_indexes`` keeps
    only a few and drops ``partialFilterExpression``, so the idempotency index became unique over every job."""
    created = []
    for index in indexes:
        options = {name: value for name, value in index.document.items() if name != "key"}
        created.append(self.create_index(list(index.document["key"].items()), session=session, **options))
    return created


def keep_index_options() -> None:
    mongomock.Collection.create_indexes = _create_indexes  # type: ignore[method-assign,assignment]
