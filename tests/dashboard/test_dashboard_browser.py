"""The dashboard in a real headless Chromium: tasks page -> task page -> review queue, labelling
with the keyboard; screenshots of each page go into the test's tmp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from understudy.dashboard.sample import SeededCall
from understudy.settings import Settings
from understudy.store import Store
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

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install)"
)


def _human_labels(store: Store) -> dict[str, str]:
    return {
        e.call_id or "": e.labels["sentiment"]
        for e in store.examples("sentiment")
        if e.source.value == "human"
    }


def test_label_three_calls_with_the_keyboard(
    settings: Settings, store: Store, seeded: list[SeededCall], tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with (
        run_gateway(settings, store) as base_url,
        sync_api.sync_playwright() as p,
    ):
        root = base_url.removesuffix("/v1")
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        page.goto(f"{root}/ui/tasks")
        assert page.locator("#tasks tbody tr").count() == 1
        page.screenshot(path=tmp_path / "tasks.png", full_page=True)

        page.click("text=sentiment")
        page.wait_for_url("**/ui/tasks/sentiment")
        assert page.locator("svg.chart").count() == 4
        page.screenshot(path=tmp_path / "task.png", full_page=True)

        page.click("text=Review queue")
        page.wait_for_selector("#review[data-busy=false]")
        first = page.get_attribute("#item", "data-call-id")
        page.screenshot(path=tmp_path / "review.png", full_page=True)
        # label 1st as "positive", skip 2nd, label 3rd "negative", undo it, label it "neutral",
        # label 4th "positive": three calls labelled, one skipped.
        order: list[str | None] = [first]
        for key in ("1", "s", "2", "u", "3", "1"):
            page.keyboard.press(key)
            page.wait_for_selector("#review[data-busy=false]")
            order.append(page.get_attribute("#item", "data-call-id"))
        assert "3 labelled this session" in (page.text_content("#status") or "")
        page.screenshot(path=tmp_path / "review-after.png", full_page=True)

        page.goto(f"{root}/ui/calls?task=sentiment")
        assert page.locator("#calls tr").count() > 10
        page.screenshot(path=tmp_path / "calls.png", full_page=True)
        browser.close()
    assert errors == []
    # order[i]: the call on screen after the i-th key (order[0]: before any key).
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
