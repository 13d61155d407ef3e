"""Fixtures shared by the unit tests of store/ and its callers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engineroom.core.config import Settings
from engineroom.store.client import Database, connect, ensure_indexes


@pytest.fixture
async def db(settings: Settings, mongodb_url: str) -> AsyncIterator[Database]:
    """The test's own database on the session's SecantusDB, with every index the store's queries rely on."""
    client = connect(settings.model_copy(update={"mongodb_url": mongodb_url}))
    database = client[settings.mongodb_db]
    await ensure_indexes(database, retention_days=30)
    yield database
    client.close()
