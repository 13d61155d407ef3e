"""A scheduler tick names each of its phases that ran slow (a stalled scheduler otherwise leaves no trace), and runs
the sweeps for rare events at their own pace."""

from __future__ import annotations

import logging

import pytest

from engineroom.core.config import Settings
from engineroom.messaging.bus import LocalEventBus
from engineroom.scheduler import loop
from engineroom.scheduler.loop import Scheduler, SchedulerStores
from engineroom.services.dispatch import Dispatcher
from engineroom.services.publisher import AsyncEventPublisher
from engineroom.store.client import Database
from engineroom.store.events import EventStore


async def test_a_slow_tick_phase_is_logged_by_name(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stores = SchedulerStores.of(db, settings)
    publisher = AsyncEventPublisher(LocalEventBus(), EventStore(db, ttl_s=60))
    scheduler = Scheduler(settings, stores, Dispatcher(stores.jobs, enqueuer=None), publisher)  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, logger="engineroom.scheduler.loop")
    monkeypatch.setattr(loop, "SLOW_PHASE_S", -1.0)  # every phase counts as slow
    await scheduler.tick()
    slow = [record.getMessage() for record in caplog.records if "took" in record.getMessage()]
    assert len(slow) == 12 and slow[0].startswith("scheduler tick: release_due_scheduled took")
    assert slow[-1].startswith("scheduler tick: sweep_artifacts took")
    # At once again: the sweeps for rare events wait for their own pace
    caplog.clear()
    await scheduler.tick()
    again = [record.getMessage().split()[2] for record in caplog.records if "took" in record.getMessage()]
    assert again == [
        "release_due_scheduled",
        "release_ready_dependents",
        "finish_workflows",
        "release_due_retries",
        "start_parked",
        "resend_lost_messages",
    ]
    publisher.close()
