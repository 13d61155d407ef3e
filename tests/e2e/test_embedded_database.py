"""The embedded SecantusDB's own life: the fault tests freeze and kill it, and must still stop it cleanly."""

from __future__ import annotations

from pathlib import Path

import pymongo

from engineroom.core.embedded import EmbeddedDatabase


def test_a_frozen_database_stops_cleanly_on_sigterm_instead_of_being_killed(tmp_path: Path) -> None:
    # Given a server that holds a write and is then frozen, as the shutdown tests freeze it
    database = EmbeddedDatabase(tmp_path / "db").start()
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(database.url, serverSelectionTimeoutMS=2000)
    try:
        client.db.things.insert_one({"kept": True})
    finally:
        client.close()  # before the freeze: a client's close waits on a frozen server
    database.freeze()
    # When it is stopped
    database.stop()
    # Then it exits on its SIGTERM (a lost one left it running until the SIGKILL ten seconds later: -9)
    assert database.exit_code == 0
