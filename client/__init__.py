"""The Python client of the engineroom API: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Re-exported here, like ``actors``' task API, because this is what application code imports
(``from engineroom.client import Client``); everything else is imported from its defining module.
"""

from engineroom.client.async_client import AsyncClient
from engineroom.client.sync_client import Client

__all__ = ["AsyncClient", "Client"]
