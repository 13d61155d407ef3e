"""The WebSocket fan-out benchmark's baseline: the least a Starlette/uvicorn server can do with the same events.

It consumes the same events exchange the same way a gateway does (a pika consumer thread handing bodies to the
event loop), and sends each body as it came to the sockets of the user it names, one after another from one task.
No token, no model validation, no per-socket buffer, no re-serialization: what engineroom's gateway adds on top is
the difference between the two runs. Run as ``python -m bench.ws_baseline --port P --amqp-url URL --exchange X``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
from collections import defaultdict
from collections.abc import AsyncIterator

import pika
import uvicorn
from pika.adapters.blocking_connection import BlockingChannel
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


class Broadcaster:
    """Sockets by user, and the one task that sends each event to its user's sockets."""

    def __init__(self) -> None:
        self.sockets: dict[str, set[WebSocket]] = defaultdict(set)
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()

    async def run(self) -> None:
        while True:
            body = await self.inbox.get()
            text = body.decode()
            for socket in list(self.sockets.get(json.loads(text)["user_id"], ())):
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await socket.send_text(text)


def bind(amqp_url: str, exchange: str, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[bytes]) -> BlockingChannel:
    """A channel consuming every event of the exchange through an exclusive queue into ``inbox`` on ``loop``, as
    the gateway's consumer does; bound before the server listens, so a client that connected hears everything."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
    channel.queue_bind(queue, exchange, routing_key="#")

    def on_message(_channel: object, _method: object, _properties: object, body: bytes) -> None:
        loop.call_soon_threadsafe(inbox.put_nowait, body)

    channel.basic_consume(queue, on_message, auto_ack=True)
    return channel


def create_app(amqp_url: str, exchange: str) -> Starlette:
    broadcaster = Broadcaster()

    async def endpoint(websocket: WebSocket) -> None:
        user = websocket.query_params["user"]
        await websocket.accept()
        await websocket.send_text('{"type": "hello"}')
        broadcaster.sockets[user].add(websocket)
        try:
            while True:
                await websocket.receive_text()
                await websocket.send_text('{"type": "pong"}')
        except WebSocketDisconnect:
            pass
        finally:
            broadcaster.sockets[user].discard(websocket)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        channel = bind(amqp_url, exchange, asyncio.get_running_loop(), broadcaster.inbox)
        threading.Thread(target=channel.start_consuming, name="baseline-consumer", daemon=True).start()
        sender = asyncio.create_task(broadcaster.run())
        yield
        sender.cancel()

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--exchange", required=True)
    args = parser.parse_args()
    # The same server settings as ``engineroom api`` (cli.py): uvicorn's defaults, info logging.
    uvicorn.run(create_app(args.amqp_url, args.exchange), host="127.0.0.1", port=args.port, log_level="info")


if __name__ == "__main__":
    main()
