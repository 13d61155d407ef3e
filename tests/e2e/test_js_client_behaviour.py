"""``engineroom.js`` on its own in chromium: a fake ``WebSocket`` and Playwright's fake clock drive what a server
rarely does on cue (duplicates, refused tokens, silent connections, long outages), so each rule is checked exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CLOCK_START = datetime(2026, 1, 1, tzinfo=UTC)
CLIENT_JS = Path(__file__).resolve().parents[2] / "api" / "static" / "engineroom.js"
#: A WebSocket stand-in the test opens, feeds and closes by hand; ``fetch`` answers the token probe with
#: ``window.probeStatus``.
FAKES = """
window.sockets = [];
class FakeSocket {
  constructor(url, protocols) {
    Object.assign(this, {url, protocols, readyState: 0, sent: [], closedWith: null});
    sockets.push(this);
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  close(code) { this.readyState = 3; this.closedWith = code; }
  serverOpens() { this.readyState = 1; this.onopen && this.onopen({}); }
  serverSends(frame) { this.onmessage && this.onmessage({data: JSON.stringify(frame)}); }
  serverCloses(code) { this.readyState = 3; this.onclose && this.onclose({code, reason: ""}); }
}
Object.assign(FakeSocket.prototype, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
window.WebSocket = FakeSocket;
window.probeStatus = 503;
window.fetch = () => Promise.resolve({status: window.probeStatus});
window.seen = {events: [], statuses: [], errors: []};
window.start = (options) => {
  window.client = new EngineroomClient(Object.assign({
    url: "ws://gateway.test/ws",
    token: "a.b.c",
    onEvent: (event) => seen.events.push(event.id),
    onStatus: (status, detail) => seen.statuses.push([status, detail || null]),
    onError: (error) => seen.errors.push(error),
  }, options));
  client.connect();
};
window.last = () => sockets[sockets.length - 1];
window.event = (id) => ({id, type: "job.progress", ts: "2026-01-01T00:00:00Z", job_id: "j", data: {}});
"""


@pytest.fixture
def client_page(page: Page) -> Page:
    """A blank page with the fakes, the fake clock and the client script; nothing reaches the network.

    The clock is paused: installed alone it also runs in real time, so a slow machine fired a timer the test had
    not reached yet (a reconnect 250 ms after a dropped ping, seen in CI).
    """
    page.clock.install(time=CLOCK_START)
    page.clock.pause_at(CLOCK_START + timedelta(seconds=1))
    page.set_content("<!doctype html><html><body></body></html>")
    page.add_script_tag(content=FAKES)
    page.add_script_tag(content=CLIENT_JS.read_text())
    return page


def js(page: Page, expression: str) -> Any:
    """The value of a JavaScript expression in the page (use the comma operator for several steps)."""
    return page.evaluate(f"() => ({expression})")


def connect_and_greet(page: Page, options: str = "{}", last_event_id: str | None = None) -> None:
    page.evaluate(f"() => start({options})")
    page.evaluate(
        "(id) => { last().serverOpens(); last().serverSends({type: 'hello', last_event_id: id}); }", last_event_id
    )


def statuses(page: Page) -> list[str]:
    return [status for status, _ in js(page, "seen.statuses")]


def test_the_token_goes_as_a_bearer_subprotocol_and_the_client_opens(client_page: Page) -> None:
    connect_and_greet(client_page)

    assert js(client_page, "sockets.map((s) => s.protocols)") == [["bearer", "a.b.c"]]
    assert statuses(client_page) == ["connecting", "open"]


def test_an_event_received_twice_reaches_the_application_once(client_page: Page) -> None:
    connect_and_greet(client_page)

    js(client_page, "['e1', 'e2', 'e1', 'e3', 'e2'].forEach((id) => last().serverSends(event(id)))")

    assert js(client_page, "seen.events") == ["e1", "e2", "e3"]
    assert js(client_page, "client.lastEventId") == "e3"


def test_the_ids_remembered_for_deduplication_are_bounded(client_page: Page) -> None:
    connect_and_greet(client_page, "{dedupeSize: 2}")

    js(client_page, "['e1', 'e2', 'e3', 'e1'].forEach((id) => last().serverSends(event(id)))")

    assert js(client_page, "seen.events") == ["e1", "e2", "e3", "e1"]  # e1 was forgotten to make room


def test_after_a_drop_the_client_reconnects_asking_for_its_topics_and_the_events_after_the_newest_one(
    client_page: Page,
) -> None:
    connect_and_greet(client_page, "{topics: ['job:j1']}")
    assert js(client_page, "last().sent") == [{"op": "subscribe", "topics": ["job:j1"]}]
    js(client_page, "last().serverSends({type: 'subscribed', topics: ['job:j1', 'mine']})")
    js(client_page, "['e2', 'e1'].forEach((id) => last().serverSends(event(id)))")
    js(client_page, "(client.subscribe('notifications'), client.unsubscribe('mine'))")
    js(client_page, "last().serverSends({type: 'subscribed', topics: ['job:j1', 'mine', 'notifications']})")
    js(client_page, "last().serverSends({type: 'unsubscribed', topics: ['job:j1', 'notifications']})")

    js(client_page, "last().serverCloses(1013)")  # too slow: try again later
    client_page.clock.run_for(500)
    hello = "{type: 'hello', last_event_id: 'e9', topics: ['job:j1', 'notifications']}"
    js(client_page, f"(last().serverOpens(), last().serverSends({hello}))")

    assert js(client_page, "sockets.length") == 2
    # the replay comes from the URL, before any live event; the topics are already right, so nothing is sent
    assert js(client_page, "last().url") == "ws://gateway.test/ws?after=e2&topics=job%3Aj1%2Cnotifications"
    assert js(client_page, "last().sent") == []
    assert statuses(client_page) == ["connecting", "open", "reconnecting", "connecting", "open"]


def test_a_first_connection_lost_before_any_event_resumes_from_where_it_began(
    client_page: Page,
) -> None:
    connect_and_greet(client_page, last_event_id="e7")

    js(client_page, "last().serverCloses(1006)")
    client_page.clock.run_for(500)
    js(client_page, "(last().serverOpens(), last().serverSends({type: 'hello', last_event_id: 'e8'}))")

    assert js(client_page, "last().url") == "ws://gateway.test/ws?after=e7&topics=mine"
    assert js(client_page, "last().sent") == []


def test_reconnect_delays_double_with_jitter_up_to_the_ceiling_and_start_over_after_a_stable_connection(
    client_page: Page,
) -> None:
    js(client_page, "start({})")
    for _ in range(9):  # the server is down: every attempt fails before opening, and the probe says 503
        js(client_page, "last().serverCloses(1006)")
        client_page.clock.run_for(30_000)
    delays = [detail["delayMs"] for status, detail in js(client_page, "seen.statuses") if status == "reconnecting"]

    ceilings = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    assert len(delays) == len(ceilings)
    assert all(ceiling / 2 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))

    js(client_page, "(last().serverOpens(), last().serverSends({type: 'hello', last_event_id: null}))")
    client_page.clock.run_for(10_000)  # stableAfterMs
    js(client_page, "last().serverCloses(1012)")
    assert 250 <= js(client_page, "seen.statuses[seen.statuses.length - 1][1].delayMs") <= 500


def test_close_code_4401_is_unauthorized_and_final(client_page: Page) -> None:
    js(client_page, "start({})")

    js(client_page, "(last().serverOpens(), last().serverCloses(4401))")
    client_page.clock.run_for(120_000)

    assert statuses(client_page) == ["connecting", "unauthorized"]
    assert js(client_page, "sockets.length") == 1
    assert js(client_page, "seen.errors.map((e) => e.type)") == ["unauthorized"]


def test_a_handshake_refused_with_http_401_is_told_apart_from_a_server_that_is_down(client_page: Page) -> None:
    js(client_page, "(start({}), window.probeStatus = 401)")

    js(client_page, "last().serverCloses(1006)")  # all a browser learns of an HTTP 401 answer
    client_page.wait_for_function("() => client.status === 'unauthorized'")
    client_page.clock.run_for(120_000)

    assert js(client_page, "sockets.length") == 1


def test_a_silent_connection_is_pinged_then_dropped_and_replaced(client_page: Page) -> None:
    connect_and_greet(client_page)

    client_page.clock.run_for(25_000)
    assert js(client_page, "last().sent") == [{"op": "ping"}]
    client_page.clock.run_for(10_000)  # no pong

    assert js(client_page, "sockets[0].closedWith") == 1000
    assert statuses(client_page)[-1] == "reconnecting"


def test_a_pong_keeps_the_connection(client_page: Page) -> None:
    connect_and_greet(client_page)

    client_page.clock.run_for(25_000)
    js(client_page, "last().serverSends({type: 'pong'})")
    client_page.clock.run_for(10_000)

    assert statuses(client_page) == ["connecting", "open"]


def test_close_stops_for_good(client_page: Page) -> None:
    connect_and_greet(client_page)

    js(client_page, "client.close()")
    client_page.clock.run_for(120_000)

    assert statuses(client_page) == ["connecting", "open", "closed"]
    assert js(client_page, "sockets.length") == 1 and js(client_page, "sockets[0].closedWith") == 1000


def test_an_application_callback_that_throws_does_not_break_the_client(client_page: Page) -> None:
    connect_and_greet(client_page, "{onEvent: (e) => { seen.events.push(e.id); throw new Error('app bug'); }}")

    js(client_page, "['e1', 'e2'].forEach((id) => last().serverSends(event(id)))")

    assert js(client_page, "seen.events") == ["e1", "e2"]
