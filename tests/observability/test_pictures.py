"""Equity-curve pictures: downloadable from the API, shown on the version's admin page."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from registry.artifacts import artifact_storage
from tests.conftest import version_add

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
