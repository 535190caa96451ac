"""Equity-curve pictures: downloadable from the API, shown on the version's admin page."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from django.contrib.auth.models import User

from registry import services
from registry.artifacts import artifact_save, artifact_storage
from tests.conftest import PASSING_METRICS, version_add
from training.evaluation.plots import equity_curve_png, equity_curve_points, equity_series_npz

from .conftest import latest_evaluation, version_with_picture

pytestmark = pytest.mark.django_db

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stored(version) -> bytes:
    with artifact_storage().open(latest_evaluation(version).equity_curve, "rb") as handle:
        return handle.read()


def test_api_serves_an_evaluations_picture(reader_client):
    version = version_with_picture()
    evaluation = latest_evaluation(version)
    response = reader_client.get(f"/clm/evaluations/{evaluation.pk}/equity.png")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response.content.startswith(PNG_MAGIC) and response.content == _stored(version)
    assert "xgboost-btcusdt-1h-v1" in response["Content-Disposition"]


def test_api_serves_the_latest_picture_of_a_version(reader_client):
    version = version_with_picture()
    response = reader_client.get("/clm/models/xgboost-btcusdt-1h/versions/1/equity.png")
    assert response.status_code == 200 and response.content == _stored(version)
    browser = reader_client.get(
        "/clm/models/xgboost-btcusdt-1h/versions/1/equity.png", HTTP_ACCEPT="image/png,*/*"
    )
    assert browser.status_code == 200 and browser.content.startswith(PNG_MAGIC)


def test_api_pictures_need_a_login(anon_client):
    evaluation = latest_evaluation(version_with_picture())
    assert anon_client.get(f"/clm/evaluations/{evaluation.pk}/equity.png").status_code in (
        401,
        403,
    )


def test_missing_pictures_are_404_with_a_message(reader_client):
    version_add(status="candidate")  # evaluated without a picture
    unevaluated = version_add(symbol="ETHUSDT", passed=None, status="training")
    evaluation = latest_evaluation(version_add(symbol="SOLUSDT"))
    for url in (
        "/clm/models/xgboost-btcusdt-1h/versions/1/equity.png",
        f"/clm/models/{unevaluated.model.model_id}/versions/1/equity.png",
        f"/clm/evaluations/{evaluation.pk}/equity.png",
        "/clm/evaluations/999999/equity.png",
        "/clm/models/nope/versions/1/equity.png",
    ):
        response = reader_client.get(url, HTTP_ACCEPT="image/png")
        assert response.status_code == 404, url
        assert response.json()["code"] == "not_found", url


def test_the_version_admin_page_shows_the_picture(admin_client):
    version = version_with_picture()
    evaluation = latest_evaluation(version)
    page = admin_client.get(f"/admin/registry/modelversion/{version.pk}/change/")
    assert page.status_code == 200
    url = f"/admin/registry/evaluationresult/{evaluation.pk}/equity.png"
    assert f'<img src="{url}"' in page.content.decode()
    picture = admin_client.get(url)
    assert picture.status_code == 200 and picture["Content-Type"] == "image/png"
    assert picture.content == _stored(version)
    evaluation_page = admin_client.get(f"/admin/registry/evaluationresult/{evaluation.pk}/change/")
    assert f'<img src="{url}"' in evaluation_page.content.decode()


def test_admin_pictures_are_for_staff_with_view_rights(client):
    evaluation = latest_evaluation(version_with_picture())
    url = f"/admin/registry/evaluationresult/{evaluation.pk}/equity.png"
    assert client.get(url).status_code == 302  # to the admin login
    staff = User.objects.create_user("staffer", password="pw-staff-123", is_staff=True)
    client.force_login(staff)
    assert client.get(url).status_code == 403
    assert client.get("/admin/registry/evaluationresult/999999/equity.png").status_code == 404


def test_a_version_without_evaluation_shows_a_dash(admin_client):
    version = version_add(passed=None, status="training")
    page = admin_client.get(f"/admin/registry/modelversion/{version.pk}/change/")
    assert page.status_code == 200 and b"equity.png" not in page.content


def test_a_jobs_stored_points_are_drawn_on_the_first_request_and_kept(reader_client):
    """A job stores the picture's points; the first request draws the same picture
    `equity_curve_png` would have, stores it, and later requests serve the stored one."""
    rng = np.random.default_rng(3)
    start = np.datetime64("2026-01-01T00:00:00", "s")
    series = {
        "timestamps": start + np.arange(3_000) * np.timedelta64(3600, "s"),
        "equity": np.cumprod(1 + rng.normal(0.0005, 0.01, 3_000)),
        "buy_hold": np.cumprod(1 + rng.normal(0.0003, 0.012, 3_000)),
        "regimes": np.where(np.arange(3_000) < 1_500, "uptrend:low_vol", "range:high_vol"),
    }
    version = version_add(passed=None, status="training")
    stored = artifact_save(
        model_id="xgboost-btcusdt-1h/plots",
        blob=equity_series_npz(points=equity_curve_points(**series), title="drawn later"),
        suffix=".npz",
    )
    evaluation = services.evaluation_record(
        version=version, metrics=PASSING_METRICS, window_start=datetime(2026, 1, 1, tzinfo=UTC),
        window_end=datetime(2026, 5, 1, tzinfo=UTC), n_bars=3_000, fee=0.0005,
        periods_per_year=8760, n_trials=1, gates={}, passed=True, equity_series=stored.path,
    )  # fmt: skip
    assert evaluation.equity_curve == ""

    first = reader_client.get(f"/clm/evaluations/{evaluation.pk}/equity.png")
    assert first.status_code == 200 and first.content.startswith(PNG_MAGIC)
    assert first.content == equity_curve_png(title="drawn later", **series)
    evaluation.refresh_from_db()
    assert evaluation.equity_curve.endswith(".png")
    with artifact_storage().open(evaluation.equity_curve, "rb") as handle:
        assert handle.read() == first.content
    again = reader_client.get("/clm/models/xgboost-btcusdt-1h/versions/1/equity.png")
    assert again.status_code == 200 and again.content == first.content
