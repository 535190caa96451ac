"""The registry admin in a real browser (headless Debian Chromium driven by Playwright), one test
per flow a person takes: the model page, comparing versions, promoting with a confirmation, and
training from the form (run by a real Celery worker).

Every flow ends in a full-page screenshot that the test checks: the file is a PNG of the page's
width, and the area of each key element holds a picture (many colours), not a blank. Screenshots
go to $CLM_SCREENSHOT_DIR when set (to look at them), else the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connections

from registry import services
from registry.models import JobStatus, LifecycleEvent, ModelStatus, ModelVersion, TrainingJob
from tests.observability.test_browser import CHROMIUM, LAUNCH_ARGS
from tests.training.conftest import store_bars, train_versions

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-admin-pw-2"
WIDTH = 1400  # the window the pages must fit
MODEL = "xgboost-btcusdt-1h"


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CLM_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(live_server, monkeypatch):
    """A logged-in superuser's page. Playwright's sync API runs an event loop in this thread;
    the ORM calls the tests make between browser steps are safe (one thread, no concurrency),
    hence DJANGO_ALLOW_ASYNC_UNSAFE."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package `chromium`)")
    api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) not installed")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    User.objects.create_superuser("admin", "admin@example.com", PASSWORD)
    with api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            tab = browser.new_page(viewport={"width": WIDTH, "height": 900})
            tab.set_default_timeout(20_000)
            tab.goto(f"{live_server.url}/admin/login/?next=/admin/")
            tab.fill("#id_username", "admin")
            tab.fill("#id_password", PASSWORD)
            tab.click("input[type=submit]")
            tab.wait_for_url(f"{live_server.url}/admin/")
            tab.base = live_server.url
            yield tab
        finally:
            # Inside Playwright's running loop Django keeps the connections the test opened
            # apart from the thread's own; close them here, or the test database stays in use.
            connections.close_all()
            browser.close()


@pytest.fixture
def trained() -> list[ModelVersion]:
    """Two versions trained by the real pipeline; v1 promoted by alice."""
    store_bars("BTCUSDT", 2_500, seed=11)
    versions = train_versions(2, 4)
    services.model_version_promote(model_id=MODEL, version=1, actor="alice", reason="first model")
    return [ModelVersion.objects.get(pk=v.pk) for v in versions]


def screenshot(page, path: Path, *key_elements: str) -> None:
    """A full-page screenshot, checked: a PNG as wide as the window, and each key element's
    area in it holds a picture rather than a blank."""
    from PIL import Image

    for selector in key_elements:
        page.locator(selector).first.scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 20_000, path
    image = Image.open(path).convert("RGB")
    assert image.width == WIDTH and image.height >= 600
    for selector in key_elements:
        box = page.locator(selector).first.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 12, selector
        area = image.crop(
            (int(box["x"]), int(box["y"]), int(box["x"] + box["width"]),
             int(box["y"] + box["height"]))
        )  # fmt: skip
        colours = area.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 8, f"{selector} looks blank in {path}"
    print("screenshot:", path)


def fits(page) -> int:
    width = page.evaluate("document.documentElement.scrollWidth")
    if width > WIDTH:
        wide = page.evaluate(
            """w => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > w)
                .slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className + ' '
                                   + (e.textContent || '').slice(0, 60))""",
            WIDTH,
        )
        print("too wide:", *wide, sep="\n  ")
    return width


def test_model_page_shows_versions_history_and_policies(trained, page, shots):
    model = trained[0].model
    page.goto(f"{page.base}/admin/registry/registeredmodel/{model.pk}/change/")

    rows = page.locator("#versions-table tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).locator("td").nth(1).inner_text() == "v2"
    assert "production" in rows.nth(1).inner_text() and "candidate" in rows.nth(0).inner_text()
    assert "%" in rows.nth(0).locator("td").nth(4).inner_text()  # drawdown as a percentage
    change = page.locator("#production-history li")
    assert change.count() == 1
    text = change.inner_text()
    assert "v1" in text and "alice" in text and "first model" in text
    assert "Sharpe ≥" in page.locator("#policies").inner_text()
    assert (
        page.locator("#train-link")
        .get_attribute("href")
        .endswith("?model_type=xgboost&market=BTCUSDT%7C1h")
    )
    assert page.locator('a:has-text("View site")').get_attribute("href") == "/api/docs/"
    assert fits(page) <= WIDTH
    screenshot(page, shots / "model-page.png", "#versions-table", "#production-history",
               "#policies")  # fmt: skip

    lists = ["registeredmodel", "modelversion", "trainingjob", "evaluationresult",
             "lifecycleevent", "outboxevent"]  # fmt: skip
    version_page = f"{page.base}/admin/registry/modelversion/{trained[1].pk}/change/"
    for url in [f"{page.base}/admin/registry/{name}/" for name in lists] + [version_page]:
        page.goto(url)
        assert fits(page) <= WIDTH, f"{url} is {fits(page)} px wide"
    screenshot(page, shots / "version-page.png", ".field-latest_metrics", "img.equity-curve")
    notes = page.locator("fieldset.collapse")
    assert notes.count() == 2 and "[]" not in page.locator(".field-tags").inner_text()


def test_compare_two_versions_from_the_model_page(trained, page, shots):
    model = trained[0].model
    page.goto(f"{page.base}/admin/registry/registeredmodel/{model.pk}/change/")
    page.check("input[name=versions][value='1']")
    page.check("input[name=versions][value='2']")
    page.click("#compare-button")
    page.wait_for_url("**/admin/registry/modelversion/compare/**")

    metrics = page.locator("#compare-metrics")
    assert metrics.locator("thead th").count() == 3  # metric, v1, v2
    assert "DSR" in metrics.inner_text() and "CAGR" in metrics.inner_text()
    curves = page.locator("img#compare-curves")
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 600", arg=curves.element_handle()
    )
    common = page.locator("#common-window")
    assert common.locator("tbody tr").count() == 5
    differs = page.locator("#compare-params tr.differs")
    assert "max_depth" in differs.inner_text()
    assert fits(page) <= WIDTH
    screenshot(page, shots / "compare.png", "#compare-metrics", "#compare-curves",
               "#compare-params")  # fmt: skip


def test_promote_asks_for_a_reason_and_shows_what_changes(trained, page, shots):
    v1, v2 = trained
    page.goto(f"{page.base}/admin/registry/modelversion/{v2.pk}/change/")
    page.click("a.lifecycle-link:has-text('Promote')")
    page.wait_for_url(f"**/admin/registry/modelversion/{v2.pk}/promote/")

    what = page.locator("#what-changes").inner_text()
    assert "from v1 to v2" in what and "v1 is retired" in what
    headers = page.locator("#confirm-metrics thead th")
    assert [headers.nth(i).text_content().split()[0] for i in (1, 2)] == ["v1", "v2"]
    page.click("#lifecycle-form input[type=submit]")  # no reason: the browser refuses to send
    assert page.locator("#id_reason").evaluate("e => e.validity.valueMissing")
    page.fill("#id_reason", "   ")  # only spaces: the server refuses
    page.click("#lifecycle-form input[type=submit]")
    assert "Say why" in page.locator("#lifecycle-form .errorlist").inner_text()
    v2.refresh_from_db()
    assert v2.status == ModelStatus.CANDIDATE
    page.fill("#id_reason", "v2 beats v1 on the same window")
    screenshot(page, shots / "promote-confirm.png", "#what-changes", "#confirm-metrics",
               "#lifecycle-form")  # fmt: skip

    page.click("#lifecycle-form input[type=submit]")
    page.wait_for_url(f"**/admin/registry/modelversion/{v2.pk}/change/")
    assert "is now in production" in page.locator(".messagelist .success").inner_text()
    assert page.locator(".field-status_shown .readonly").inner_text().strip() == "production"
    screenshot(page, shots / "promoted.png", ".messagelist", ".field-latest_metrics")

    row = LifecycleEvent.objects.get(version=v2, action="promote")
    assert (row.actor, row.reason, row.from_status) == (
        "admin",
        "v2 beats v1 on the same window",
        ModelStatus.CANDIDATE,
    )
    assert ModelVersion.objects.get(pk=v1.pk).status == ModelStatus.RETIRED


@pytest.mark.slow  # a live worker
def test_train_from_the_form_runs_on_a_worker(page, live_worker, shots):
    store_bars("BTCUSDT", 2_000, seed=5)
    page.goto(f"{page.base}/admin/training/triggerrecord/train/")
    assert "BTCUSDT 1h: 2,000 bars" in page.locator("#id_market").inner_text()
    page.select_option("#id_model_type", "xgboost")
    assert page.locator("details[data-model-type=xgboost]").get_attribute("open") is not None
    page.fill("#id_params", json.dumps({"max_depth": 0}))
    page.click("#train-submit")
    error = page.locator(".field-params .errorlist").inner_text()
    assert "max_depth" in error and ">= 1" in error
    assert not TrainingJob.objects.exists()
    screenshot(page, shots / "train-form-error.png", "#train-form", "#param-help")

    page.fill("#id_params", json.dumps({"n_estimators": 30, "max_depth": 3}))
    page.click("#train-submit")
    page.wait_for_url("**/admin/registry/trainingjob/**/change/")
    assert "queued for xgboost-btcusdt-1h" in page.locator(".messagelist .success").inner_text()
    job = TrainingJob.objects.get()
    assert (job.params, job.requested_by) == ({"n_estimators": 30, "max_depth": 3}, "admin")

    deadline = time.monotonic() + 300
    while job.status not in (JobStatus.COMPLETED, JobStatus.FAILED):
        assert time.monotonic() < deadline, f"job still {job.status} after 300 s"
        time.sleep(2)
        job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, job.error_message
    page.goto(f"{page.base}/admin/registry/registeredmodel/{job.model_id}/change/")
    assert page.locator("#versions-table tbody tr").count() == 1
    screenshot(page, shots / "trained.png", "#versions-table")
