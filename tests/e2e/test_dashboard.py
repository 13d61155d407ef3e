"""The dashboard (``GET /``) in a real browser against real gateway, worker and scheduler processes.

One cluster and one chromium serve the whole module (starting them is most of the cost); each test gets a fresh
browser context, so sign-ins never leak between tests. Screenshots of every view go to ``test-artifacts/dashboard/``
(git-ignored); with ``ENGINEROOM_DOCS_SCREENSHOTS=1`` the queues and jobs views are also saved into ``docs/`` for the
README. Tests are plain functions: Playwright's sync API does not run inside an asyncio loop.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pika
import pytest

from engineroom.core.config import ENGINES
from engineroom.services.tokens import issue_token
from tests.e2e.conftest import Stack
from tests.settings import make_settings

if TYPE_CHECKING:
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
DOCS = ROOT / "docs"
SECRET = "engineroom-dashboard-test-secret-0123456789"
#: Milliseconds the page may take to show what a test waits for (jobs finish in a second or two).
SHOW_MS = 20_000
#: How long a notification may take to reach the bell.
NOTIFIED_MS = 60_000
FAST = {"ENGINEROOM_SCHEDULER_INTERVAL_S": "0.2", "ENGINEROOM_DISPATCH_GRACE_S": "1"}


def token(user: str, *, admin: bool = False) -> str:
    return issue_token(make_settings(jwt_secret=SECRET), user_id=user, tenant_id="acme", admin=admin)


def auth(user: str, *, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, admin=admin)}"}


@pytest.fixture(scope="module")
def base_url(
    mongodb_url: str, amqp_url: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A gateway, a scheduler and a worker for every engine, shared by the module's tests (their logs are printed
    when one of the module's tests failed)."""
    failed_before = request.session.testsfailed
    namespace = f"test{uuid.uuid4().hex[:8]}."
    env = {
        **os.environ,
        **FAST,
        "ENGINEROOM_MONGODB_URL": mongodb_url,
        "ENGINEROOM_MONGODB_DB": f"test_{uuid.uuid4().hex[:12]}",
        "ENGINEROOM_AMQP_URL": amqp_url,
        "ENGINEROOM_NAMESPACE": namespace,
        "ENGINEROOM_JWT_SECRET": SECRET,
        "PYTHONUNBUFFERED": "1",
    }
    cluster = Stack(env=env, log_dir=tmp_path_factory.mktemp("dashboard"))
    try:
        url = cluster.start_api()
        cluster.start_scheduler()
        cluster.start_worker("--threads", "4")
        yield url
    finally:
        cluster.kill()
        if request.session.testsfailed > failed_before:
            print(cluster.logs())  # noqa: T201  (shown by pytest with the module's last test)
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        for engine in ENGINES:
            for suffix in ("", ".DQ", ".XQ"):
                channel.queue_delete(f"{namespace}{engine}{suffix}")
        channel.queue_delete(f"{namespace}engineroom.notifier")
        channel.exchange_delete(f"{namespace}engineroom.events")
        connection.close()


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


def open_dashboard(page: Page, base_url: str, user: str, view: str, *, admin: bool = False) -> None:
    """Sign in with ``/?token=`` at 1280×800 and open ``view`` (a ``#/...`` route) once live updates are on."""
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{base_url}/?token={token(user, admin=admin)}{view}")
    expect(page.locator("body")).to_have_attribute("data-connection", "open", timeout=SHOW_MS)


def screenshot(page: Page, name: str, *, docs: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    if docs and os.environ.get("ENGINEROOM_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=DOCS / f"dashboard-{name}.png")


def submit(http: httpx.Client, user: str, engine: str = "general", *, admin: bool = False, **payload: Any) -> str:
    body = {"task": f"{engine}.demo", "payload": payload}
    response = http.post("/jobs", json=body, headers=auth(user, admin=admin))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def state_of(http: httpx.Client, user: str, job_id: str, *, admin: bool = False) -> str:
    state: str = http.get(f"/jobs/{job_id}", headers=auth(user, admin=admin)).json()["state"]
    return state


def test_a_job_submitted_from_the_form_fills_its_progress_bar_to_100_percent(base_url: str, page: Page) -> None:
    from playwright.sync_api import expect

    # Given alice signed in through the address bar
    open_dashboard(page, base_url, "alice", "#/jobs")
    assert "token=" not in page.url, "the token must leave the address bar"
    # When she submits general.demo from the form built from GET /tasks
    form = page.get_by_role("form", name="Submit a job")
    form.get_by_label("Task").select_option("general.demo")
    form.get_by_label("Duration S").fill("1.5")
    form.get_by_label("Steps").fill("3")
    form.get_by_label("Tags").fill("from-form")
    form.get_by_role("button", name="Submit job").click()
    link = page.locator(".submit .ok a")
    expect(link).to_be_visible()
    job_id = link.inner_text()
    # Then its row's bar reaches 100 % with the last step's message, and the job completes
    row = page.locator(f'[data-job-id="{job_id}"]')
    expect(row.locator(".bar-text")).to_have_text("100 %", timeout=SHOW_MS)
    expect(row.locator(".bar-message")).to_have_text(re.compile(r"^(step 3/3|done)$"))
    expect(row.locator(".state")).to_have_text("completed", timeout=SHOW_MS)
    expect(row.locator(".tag")).to_have_text("from-form")
    screenshot(page, "jobs", docs=True)
    # And its page shows the result and the history
    row.get_by_role("link", name=job_id).click()
    expect(page.locator(".detail-head .state")).to_have_text("completed")
    expect(page.locator(".timeline li")).to_have_count(3)
    expect(page.locator("pre").first).to_contain_text('"steps": 3')
    screenshot(page, "job-detail")


def test_a_running_job_is_cancelled_from_its_page(base_url: str, page: Page, http: httpx.Client) -> None:
    from playwright.sync_api import expect

    # Given a long job of bob's, running
    job_id = submit(http, "bob", duration_s=30, steps=60)
    open_dashboard(page, base_url, "bob", f"#/jobs/{job_id}")
    expect(page.locator(".detail-head .state")).to_have_text("running", timeout=SHOW_MS)
    expect(page.locator(".detail-head .bar-text")).not_to_have_text("0 %", timeout=SHOW_MS)
    # When he cancels it from its page
    page.get_by_role("button", name=f"Cancel job {job_id}").click()
    # Then the page shows it cancelled, with no cancel button left, and the server agrees
    expect(page.locator(".detail-head .state")).to_have_text("cancelled", timeout=SHOW_MS)
    expect(page.get_by_role("button", name=f"Cancel job {job_id}")).to_have_count(0)
    expect(page.get_by_role("button", name=f"Retry job {job_id}")).to_be_visible()
    expect(page.locator(".timeline li").last).to_contain_text("cancelled", timeout=SHOW_MS)
    assert state_of(http, "bob", job_id) == "cancelled"


def test_a_job_page_that_read_the_job_before_its_start_was_written_catches_up(
    base_url: str, page: Page, http: httpx.Client
) -> None:
    from playwright.sync_api import Route, expect

    # Given the job's first reads answer "queued", as a read racing the worker's deferred start write does
    job_id = submit(http, "grace", duration_s=20, steps=40)
    stale_reads = [2]

    def trail_the_start(route: Route) -> None:
        job = route.fetch().json()
        if stale_reads[0] > 0 and job["state"] == "running":
            stale_reads[0] -= 1
            job = {**job, "state": "queued", "started_at": None}
        route.fulfill(json=job)

    page.route(f"**/jobs/{job_id}", trail_the_start)
    open_dashboard(page, base_url, "grace", f"#/jobs/{job_id}")
    # Then its page still comes to show it running while it runs (the progress events give it away)
    expect(page.locator(".detail-head .state")).to_have_text("running", timeout=SHOW_MS)
    assert stale_reads == [0]
    assert http.post(f"/jobs/{job_id}/cancel", headers=auth("grace")).status_code == 200


def test_a_paused_queue_holds_new_jobs_until_resumed_from_its_card(
    base_url: str, page: Page, http: httpx.Client
) -> None:
    from playwright.sync_api import expect

    # Given an admin on the queues view
    open_dashboard(page, base_url, "root", "#/queues", admin=True)
    card = page.locator('[data-engine="audio_generation"]')
    expect(card.locator('[data-stat="running"]')).to_have_text(re.compile(r"^0 / \d+$"))
    # When they pause audio_generation with a reason
    card.get_by_label("Pause reason").fill("provider maintenance")
    card.get_by_role("button", name="Pause audio_generation").click()
    # Then its card is unmistakably paused, with the reason
    expect(card).to_have_class(re.compile(r"\bpaused\b"))
    expect(card.locator(".paused-badge")).to_have_text("PAUSED")
    expect(card.locator(".pause-reason")).to_contain_text("provider maintenance")
    # And a new job of theirs stays queued (the card counts it; sockets hear only their own user's job events, so
    # the job is the admin's: see the module docstring of views/queues.js)
    job_id = submit(http, "root", "audio_generation", admin=True, duration_s=0.3, steps=2)
    expect(card.locator('[data-stat="queued"]')).to_have_text("1", timeout=SHOW_MS)
    assert state_of(http, "root", job_id, admin=True) == "queued"
    screenshot(page, "queues", docs=True)
    # When they resume it, the card turns back and the job runs to completion
    card.get_by_role("button", name="Resume audio_generation").click()
    expect(card).not_to_have_class(re.compile(r"\bpaused\b"))
    expect(card.locator(".paused-badge")).to_have_count(0)
    expect(card.locator('[data-stat="queued"]')).to_have_text("0", timeout=SHOW_MS)
    page.goto(f"{base_url}/#/jobs/{job_id}")
    expect(page.locator(".detail-head .state")).to_have_text("completed", timeout=SHOW_MS)


def test_a_workflow_graph_turns_all_green(base_url: str, page: Page, http: httpx.Client) -> None:
    from playwright.sync_api import expect

    # Given a diamond: fetch, then draft and image side by side, then publish
    step = {"task": "general.demo", "payload": {"duration_s": 0.4, "steps": 2}}
    steps = [
        {**step, "id": "fetch"},
        {**step, "id": "draft", "depends_on": ["fetch"]},
        {**step, "id": "image", "depends_on": ["fetch"], "task": "image_generation.demo"},
        {**step, "id": "publish", "depends_on": ["draft", "image"]},
    ]
    response = http.post("/workflows", json={"name": "launch post", "steps": steps}, headers=auth("dave"))
    assert response.status_code == 201, response.text
    workflow_id = response.json()["id"]
    # When dave opens it
    open_dashboard(page, base_url, "dave", f"#/workflows/{workflow_id}")
    # Then it is drawn in three layers and every step ends completed (green), live
    nodes = page.locator(".dag .node")
    expect(nodes).to_have_count(4)
    expect(page.locator('.dag [data-step-state="completed"]')).to_have_count(4, timeout=SHOW_MS)
    expect(page.locator("[data-workflow-state]")).to_have_attribute("data-workflow-state", "completed")
    xs = {node.get_attribute("data-step"): node.locator("rect").get_attribute("x") for node in nodes.all()}
    assert xs["draft"] == xs["image"] != xs["fetch"] and xs["publish"] not in (xs["fetch"], xs["draft"])
    # And the image step shows its output, which its node opens
    image_node = page.locator('.dag [data-step="image"]')
    expect(image_node.locator(".node-files")).to_have_text("1 file")
    expect(image_node.locator("title")).to_have_text("outputs: image.png")
    expect(page.locator('.dag [data-step="draft"] .node-files')).to_have_count(0)
    screenshot(page, "workflow")
    image_node.click()
    picture = page.get_by_role("img", name="image.png (image/png)")
    expect(picture).to_be_visible(timeout=SHOW_MS)
    page.go_back()
    page.goto(f"{base_url}/#/workflows")
    expect(page.locator(f'[data-workflow-id="{workflow_id}"] .state').first).to_have_text("completed")
    screenshot(page, "workflows")


def test_a_non_admin_signed_in_with_the_form_sees_no_queue_controls(base_url: str, page: Page) -> None:
    from playwright.sync_api import expect

    # Given erin pastes her token into the sign-in form
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base_url}/#/queues")
    page.get_by_label(re.compile("Access token")).fill(token("erin"))
    page.get_by_role("button", name="Sign in").click()
    # Then she sees every engine's card, and no pause, resume or limit control on any
    expect(page.locator(".queue")).to_have_count(len(ENGINES), timeout=SHOW_MS)
    expect(page.locator(".queue .controls")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Pause|Resume|Save limit"))).to_have_count(0)
    screenshot(page, "queues-phone")


def test_the_unread_count_drops_to_zero_after_read_all(base_url: str, page: Page, http: httpx.Client) -> None:
    from playwright.sync_api import expect

    # Given frank has notifications about two finished jobs
    first = submit(http, "frank", duration_s=0.2, steps=1)
    open_dashboard(page, base_url, "frank", "#/jobs")
    count = page.locator(".bell-count")
    # Notifications come from the notifier in the scheduler process; in loaded full runs they once took over 20 s
    # (with the parked-backlog slowdown since fixed). What this test checks is the bell, not the notifier's speed.
    expect(count).not_to_have_text("0", timeout=NOTIFIED_MS)
    second = submit(http, "frank", duration_s=0.2, steps=1)
    for job_id in (first, second):
        expect(page.locator(f'[data-job-id="{job_id}"] .state')).to_have_text("completed", timeout=SHOW_MS)
    expect(count).to_have_text("2", timeout=NOTIFIED_MS)  # both in before "read all", or a late one counts after it
    # When he opens the bell, marks one read, then all
    page.get_by_role("button", name=re.compile("Notifications, unread")).click()
    panel = page.get_by_role("region", name="Notifications")
    unread = panel.locator("li.unread").first
    expect(unread).to_be_visible()
    note_id = unread.get_attribute("data-notification-id")
    unread.get_by_role("button", name="Mark read").click()
    expect(panel.locator(f'[data-notification-id="{note_id}"]')).to_have_class("read", timeout=SHOW_MS)
    screenshot(page, "notifications")
    panel.get_by_role("button", name="Mark all read").click()
    # Then the count is zero and nothing in the list is unread
    expect(count).to_have_text("0", timeout=SHOW_MS)
    expect(panel.locator("li.unread")).to_have_count(0)
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()


def test_a_job_page_shows_its_image_plays_its_audio_and_links_its_files(
    base_url: str, page: Page, http: httpx.Client
) -> None:
    from playwright.sync_api import expect

    # Given an image, a voice-over and a clip made by the media demos for carol
    image = submit(http, "carol", "image_generation", duration_s=0.5, width=320, height=200, seed=2)
    audio = submit(http, "carol", "audio_generation", duration_s=0, audio_s=2.5)
    clip = submit(http, "carol", "video_pipeline", duration_s=0, frames=12)
    # When she opens the image's page, it shows the image, decoded, with a link to download it
    open_dashboard(page, base_url, "carol", f"#/jobs/{image}")
    expect(page.locator(".detail-head .state")).to_have_text("completed", timeout=SHOW_MS)
    picture = page.get_by_role("img", name="image.png (image/png)")
    expect(picture).to_be_visible(timeout=SHOW_MS)
    page.wait_for_function("(img) => img.complete && img.naturalWidth === 320", arg=picture.element_handle())
    # No section left out (no error here) shows as a stray "null" between the others
    assert (
        page.evaluate("[...document.querySelector('.job-detail > div').childNodes].map((n) => n.nodeType)") == [1] * 5
    )
    link = page.get_by_role("link", name="Download image.png")
    assert (link.get_attribute("href") or "").startswith(f"/jobs/{image}/artifacts/image.png?exp=")
    page.set_viewport_size({"width": 1280, "height": 960})  # the README's picture: the job with its image
    screenshot(page, "job-artifacts", docs=True)
    # And the voice-over's page has a player that read the WAV's 2.5 s
    page.goto(f"{base_url}/#/jobs/{audio}")
    player = page.locator("audio")
    expect(player).to_have_count(1, timeout=SHOW_MS)
    duration = page.wait_for_function(
        "(audio) => Number.isFinite(audio.duration) && audio.duration > 0 && audio.duration",
        arg=player.element_handle(),
    ).json_value()
    assert abs(duration - 2.5) < 0.05
    # And the clip's page shows the animated GIF
    page.goto(f"{base_url}/#/jobs/{clip}")
    animation = page.get_by_role("img", name="clip.gif (image/gif)")
    expect(animation).to_be_visible(timeout=SHOW_MS)
    page.wait_for_function("(img) => img.complete && img.naturalWidth === 160", arg=animation.element_handle())
