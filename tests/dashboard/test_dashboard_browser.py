"""The dashboard in a real headless Chromium: tasks page -> task page -> review queue, labelling
with the keyboard; screenshots of each page go into the test's tmp dir."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from understudy.dashboard.sample import SeededCall
from understudy.settings import Settings
from understudy.store import Store
from understudy.store.keys import KeyRole, create_key
from understudy.testing.gateway import run_gateway

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Milliseconds Playwright waits for a page or an element before failing.
TIMEOUT_MS = 15_000
VIEWPORT = {"width": 1366, "height": 900}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install)"
)


@contextmanager
def _dashboard_page(settings: Settings, store: Store) -> Iterator[tuple[Any, str]]:
    """A Chromium page and the root URL of a gateway serving ``store``'s dashboard."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with (
        run_gateway(settings, store) as base_url,
        sync_api.sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(TIMEOUT_MS)
        try:
            yield page, base_url.removesuffix("/v1")
        finally:
            browser.close()


def _human_labels(store: Store) -> dict[str, str]:
    return {
        e.call_id or "": e.labels["sentiment"]
        for e in store.examples("sentiment")
        if e.source.value == "human"
    }


def _label_three_calls(page: Any, root: str, out: Path) -> list[str | None]:
    """Tasks page -> task page -> review queue; label three calls with the keyboard (and skip,
    undo, relabel one). Returns the call on screen after each key (``[0]``: before any key)."""
    page.goto(f"{root}/ui/tasks")
    assert page.locator("#tasks tbody tr").count() == 1
    page.screenshot(path=out / "tasks.png", full_page=True)

    page.click("text=sentiment")
    page.wait_for_url("**/ui/tasks/sentiment")
    assert page.locator("svg.chart").count() == 4
    page.screenshot(path=out / "task.png", full_page=True)

    page.click("text=Review queue")
    page.wait_for_selector("#review[data-busy=false]")
    first = page.get_attribute("#item", "data-call-id")
    page.screenshot(path=out / "review.png", full_page=True)
    # label 1st as "positive", skip 2nd, label 3rd "negative", undo it, label it "neutral",
    # label 4th "positive": three calls labelled, one skipped.
    order: list[str | None] = [first]
    for key in ("1", "s", "2", "u", "3", "1"):
        page.keyboard.press(key)
        page.wait_for_selector("#review[data-busy=false]")
        order.append(page.get_attribute("#item", "data-call-id"))
    assert "3 labelled this session" in (page.text_content("#status") or "")
    page.screenshot(path=out / "review-after.png", full_page=True)

    page.goto(f"{root}/ui/calls?task=sentiment")
    assert page.locator("#calls tr").count() > 10
    page.screenshot(path=out / "calls.png", full_page=True)
    return order


def _assert_three_labelled(store: Store, order: list[str | None]) -> None:
    first_id, second_id, third_id, fourth_id = order[0], order[1], order[2], order[3]
    assert order[4] == third_id  # undo brought the third call back
    assert order[5] == fourth_id
    assert len(set(order[:4])) == 4
    assert _human_labels(store) == {
        str(first_id): "positive",
        str(third_id): "neutral",
        str(fourth_id): "positive",
    }
    assert second_id not in _human_labels(store)


def test_label_three_calls_with_the_keyboard(
    settings: Settings, store: Store, seeded: list[SeededCall], tmp_path: Path
) -> None:
    with _dashboard_page(settings, store) as (page, root):
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        order = _label_three_calls(page, root, tmp_path)
    assert errors == []
    _assert_three_labelled(store, order)


def test_review_queue_works_behind_admin_keys(
    settings: Settings, store: Store, seeded: list[SeededCall], tmp_path: Path
) -> None:
    """With keys configured, the browser signs in with HTTP Basic auth (the admin key as the
    password) and every fetch of the review page (queue, feedback, undo) carries it; feedback
    set to need an admin key as well, the strictest configuration."""
    sync_api = pytest.importorskip("playwright.sync_api")
    _, admin = create_key(store, KeyRole.ADMIN, "reviewer")
    _, client = create_key(store, KeyRole.CLIENT, "app")
    strict = settings.model_copy(update={"feedback_require_admin": True})
    with (
        run_gateway(strict, store) as base_url,
        sync_api.sync_playwright() as p,
    ):
        root = base_url.removesuffix("/v1")
        anonymous = httpx.get(f"{root}/ui/tasks/sentiment/review")
        assert anonymous.status_code == 401  # a browser asks for the key:
        assert 'Basic realm="understudy"' in anonymous.headers.get_list("www-authenticate")
        assert httpx.get(f"{root}/ui/tasks", auth=("app", client)).status_code == 403
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        page = browser.new_page(
            viewport=VIEWPORT, http_credentials={"username": "reviewer", "password": admin}
        )
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        failed: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on(
            "response",
            lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        order = _label_three_calls(page, root, tmp_path)
        browser.close()
    assert errors == []
    # Challenges a browser answers from its credentials are fine; anything else is not.
    assert [f for f in failed if not f.startswith("401 ")] == []
    _assert_three_labelled(store, order)


def test_a_worker_chosen_threshold_can_be_changed_from_the_form(
    settings: Settings, store: Store, seeded: list[SeededCall]
) -> None:
    """The worker stores thresholds at full precision (a confidence on the held-out curve); the
    form must submit one unchanged, which a fixed step would refuse as an invalid value."""
    store.update_task_state("sentiment", threshold=0.7597987144364706, reason="worker")
    with _dashboard_page(settings, store) as (page, root):
        page.goto(f"{root}/ui/tasks/sentiment")
        assert "0.760" in (page.text_content(".stats") or "")
        page.fill("#threshold-form input[name=reason]", "keep the worker's threshold")
        page.click("#threshold-form button")
        page.wait_for_selector("#confirm")
        assert "threshold 0.760 → 0.760" in (page.text_content("form.confirm") or "")
