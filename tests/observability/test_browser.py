"""A real browser on the admin: headless Debian Chromium driven by Playwright (no `playwright
install`: the system's /usr/bin/chromium, which .ci/test installs where it can).

A superuser logs in, opens a version the pipeline trained and evaluated, sees its equity curve
load, promotes it with the admin action (confirmed with a reason) and sees the new status and the
audit row. Screenshots of each stage are written to the test's temporary directory (printed with
`-s`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User

from registry.models import LifecycleAction, LifecycleEvent, ModelStatus
from registry.services import JobRequest, training_job_create
from tests.training.conftest import store_bars
from training.pipeline import run_job
from training.promotion.models import PromotionPolicy

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PASSWORD = "browser-admin-pw-1"


@pytest.fixture
def sync_playwright():
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is not installed (Debian package `chromium`; .ci/test installs it)"
        )
    api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) not installed")
    return api.sync_playwright


@pytest.fixture
def candidate_version():
    """A version trained and evaluated by the real pipeline, left a candidate (gates lowered,
    auto-promotion off) so the admin can promote it."""
    store_bars("BTCUSDT", 3_000, seed=11)
    PromotionPolicy.objects.create(
        model_type="xgboost", min_sharpe=-100, min_win_rate=0, min_profit_factor=0,
        max_drawdown=1.0, min_trades=0, auto_promote=False,
    )  # fmt: skip
    job, _ = training_job_create(
        request=JobRequest(
            model_type="xgboost", symbol="BTCUSDT", timeframe="1h",
            params={"n_estimators": 40, "max_depth": 3},
        ),
        dispatch=False,
    )  # fmt: skip
    assert run_job(job_id=str(job.pk)) == "completed"
    job.refresh_from_db()
    version = job.version
    # the job stores the picture's points; the admin page draws it on its first request
    assert version.status == ModelStatus.CANDIDATE and version.latest_evaluation.equity_series
    return version


def test_admin_promotes_a_version_after_seeing_its_equity_curve(
    sync_playwright, candidate_version, live_server, tmp_path
):
    User.objects.create_superuser("admin", "admin@example.com", PASSWORD)
    version = candidate_version
    change_url = f"{live_server.url}/admin/registry/modelversion/{version.pk}/change/"
    shots = []
    # No ORM calls inside: Playwright's event loop would make Django refuse them as async-unsafe.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(15_000)
            page.goto(f"{live_server.url}/admin/login/?next=/admin/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(f"{live_server.url}/admin/")

            page.goto(change_url)
            picture = page.locator("img.equity-curve")
            picture.wait_for()
            picture.scroll_into_view_if_needed()
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=picture.element_handle()
            )
            natural_width = picture.evaluate("img => img.naturalWidth")
            assert page.locator(".field-status_shown .readonly").inner_text().strip() == "candidate"
            shots.append(tmp_path / "1-version-with-equity-curve.png")
            page.screenshot(path=shots[-1], full_page=True)

            page.goto(f"{live_server.url}/admin/registry/modelversion/")
            page.check(f"input[name=_selected_action][value='{version.pk}']")
            page.select_option("select[name=action]", "promote_selected")
            page.click("button[name=index]")
            page.fill("#id_reason", "passes its gates on the browser test")
            page.click("#lifecycle-form input[type=submit]")
            success = page.locator(".messagelist .success")
            success.wait_for()
            assert "is now in production" in success.inner_text()
            shots.append(tmp_path / "2-promoted.png")
            page.screenshot(path=shots[-1], full_page=True)

            page.goto(change_url)
            assert (
                page.locator(".field-status_shown .readonly").inner_text().strip() == "production"
            )
            audit = page.locator("#audit-group tbody tr", has_text="promote")
            assert audit.count() == 1
            row = audit.inner_text().lower()
            assert "candidate" in row and "production" in row and "admin" in row
            audit.scroll_into_view_if_needed()
            shots.append(tmp_path / "3-status-and-audit.png")
            page.screenshot(path=shots[-1], full_page=True)
        finally:
            browser.close()

    print("screenshots:", *shots, sep="\n  ")
    assert natural_width > 400
    version.refresh_from_db()
    assert version.status == ModelStatus.PRODUCTION
    promoted = LifecycleEvent.objects.get(version=version, action=LifecycleAction.PROMOTE)
    assert (promoted.from_status, promoted.to_status, promoted.actor) == (
        ModelStatus.CANDIDATE,
        ModelStatus.PRODUCTION,
        "admin",
    )
