"""``RabbitEventBus.publish`` on the real RabbitMQ: a connection left idle too long is replaced before use (pika
would log its reset as ERRORs), and one that an exception raised into the thread may have cut mid-message is
dropped."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from engineroom.core.errors import JobCancelled
from engineroom.core.idle import IdleConnections, quiet_dead_connections_at_shutdown
from engineroom.core.ids import new_id
from engineroom.messaging.bus import RabbitEventBus
from engineroom.models.event import Event, EventType, new_event

IDLE_S = 0.2


def progress() -> Event:
    return new_event(EventType.JOB_PROGRESS, tenant_id="acme", user_id="alice", job_id=new_id(), data={})


def bus_for(amqp_url: str, namespace: str) -> RabbitEventBus:
    bus = RabbitEventBus(amqp_url, f"{namespace}engineroom.events")
    bus._idle = IdleConnections(IDLE_S)
    return bus


def test_a_connection_idle_past_the_limit_is_closed_and_replaced_before_the_next_publish(
    amqp_url: str, namespace: str
) -> None:
    bus = bus_for(amqp_url, namespace)
    bus.publish(progress())
    first = bus._local.connection
    bus.publish(progress())
    assert bus._local.connection is first  # in use: kept
    time.sleep(IDLE_S * 2)
    bus.publish(progress())
    fresh = bus._local.connection
    assert fresh is not None and fresh is not first and fresh.is_open
    assert first.is_closed  # closed by us, cleanly, while RabbitMQ still held it
    bus._drop_connection()


def test_an_exception_raised_into_a_publish_drops_the_connection(
    amqp_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = bus_for(amqp_url, namespace)
    bus.publish(progress())
    first = bus._local.connection

    def cancelled_midway(*args: Any, **kwargs: Any) -> None:
        raise JobCancelled("the job was cancelled while its progress was being published")

    monkeypatch.setattr(bus._local.channel, "basic_publish", cancelled_midway)
    with pytest.raises(JobCancelled):
        bus.publish(progress())
    assert bus._local.connection is None and first.is_closed
    monkeypatch.undo()
    bus.publish(progress())  # a fresh connection
    fresh = bus._local.connection
    assert fresh is not None and fresh is not first and fresh.is_open
    bus._drop_connection()


def test_idle_connections_count_per_thread_from_their_last_use() -> None:
    idle = IdleConnections(IDLE_S)
    assert idle.stale() is False  # never used: nothing to replace
    assert idle.stale() is False
    time.sleep(IDLE_S * 2)
    assert idle.stale() is True
    assert idle.stale() is False  # the check counts as a use


def test_at_shutdown_pika_lines_about_closing_dead_connections_are_dropped_and_others_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_dead_connections_at_shutdown()
    pika_logger = logging.getLogger("pika.adapters.blocking_connection")
    with caplog.at_level(logging.ERROR, logger="pika"):
        pika_logger.error("Unexpected connection close detected: StreamLostError: Connection reset by peer")
        pika_logger.error("BlockingConnection.close(200, 'Normal shutdown') called on closed connection.")
        pika_logger.error("Connection refused")
    assert [record.getMessage() for record in caplog.records] == ["Connection refused"]
