"""Versions written straight from database rows (ReadModelSerializer.write_rows, through
clm_project.renderers.JSONRenderer) must answer exactly what ModelVersionSerializer answers for
the same versions built as model instances: every field, nulls, JSON values, times."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.utils.encoders import JSONEncoder

from registry import selectors, services
from registry.api import serializers as s
from registry.models import ModelStatus, ModelVersion, VersionsRevision
from tests.conftest import evaluation_add, version_add

MODEL = "xgboost-btcusdt-1h"
ODD_TEXT = 'quote " backslash \\ tab \t line\u2028sep \u00e9\u4e2d \U0001f600 </script>'


@pytest.fixture
def versions(db) -> list[ModelVersion]:
    VersionsRevision.objects.get_or_create(pk=1)
    live = version_add(status=ModelStatus.PRODUCTION)
    evaluation_add(version=live, sharpe=2.5, profit_factor=None)  # the newer one is shown
    bare = version_add(passed=None)  # no evaluation: a null nested object
    odd = version_add(model_type="lightgbm", timeframe="4h", passed=False)
    ModelVersion.objects.filter(pk=odd.pk).update(
        description=ODD_TEXT,
        params={"nested": {"list": [1, 2.5, None, True, ODD_TEXT]}, "big": 2**53 + 1},
        failed_gates=["sharpe", ODD_TEXT],
        # On the second: no fraction of a second, which ISO 8601 then leaves out.
        created_at=datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC),
        train_start=None,
    )
    ModelVersion.objects.filter(pk=bare.pk).update(
        created_at=datetime(2026, 3, 2, 12, 0, 0, 123, tzinfo=UTC)
    )
    return [live, bare, odd]


@pytest.fixture
def client(operator) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=operator).key}")
    return client


def _expected(versions) -> list[dict]:
    """ModelVersionSerializer on instances, as DRF's own renderer would write it."""
    data = s.ModelVersionSerializer(list(versions), many=True).data
    return json.loads(json.dumps(data, cls=JSONEncoder, ensure_ascii=False))


@pytest.mark.parametrize(
    "query",
    [
        "",
        "status=candidate",
        "status=failed&model_type=lightgbm",
        "timeframe=4h",
        f"model_id={MODEL}",
        "ordering=-sharpe",
        "ordering=created_at",
        "symbol=btcusdt",  # not a compiled shape: written from instances
        "min_sharpe=1.0",
    ],
)
def test_a_page_written_from_rows_equals_the_serializer(client, versions, query):
    params = dict(pair.split("=") for pair in query.split("&") if pair)
    model_query = selectors.ModelQuery(**params)
    for offset, limit in ((0, 50), (1, 1), (2, 5)):
        response = client.get(f"/clm/models?{query}&limit={limit}&offset={offset}")
        assert response.status_code == 200, response.content[:300]
        found = selectors.model_versions_page(model_query, offset=offset, limit=limit)
        assert response.json()["results"] == _expected(found), (query, offset)


def test_compiled_shapes_are_written_from_rows(versions):
    for query in (selectors.ModelQuery(), selectors.ModelQuery(status="candidate")):
        rows = selectors.model_versions_page_rows(query, offset=0, limit=10)
        assert rows is not None and len(rows.rows) == len(
            selectors.model_versions_page(query, offset=0, limit=10)
        )
        assert s.ModelVersionSerializer.write_rows(rows) is not None
    assert (
        selectors.model_versions_page_rows(
            selectors.ModelQuery(symbol="BTCUSDT"), offset=0, limit=10
        )
        is None
    )


def test_one_version_and_the_production_read_equal_the_serializer(client, versions):
    live, bare, odd = versions
    for version in (live, bare, odd):
        model_id = version.model.model_id
        found = selectors.model_version_get(model_id=model_id, version=version.version)
        response = client.get(f"/clm/models/{model_id}/versions/{version.version}")
        assert response.status_code == 200
        assert response.json() == _expected([found])[0]
        assert selectors.model_version_rows(model_id=model_id, version=version.version)
    production = client.get(f"/clm/models/{MODEL}/production")
    assert production.json() == _expected([selectors.production_version_get(model_id=MODEL)])[0]
    assert production.json()["latest_evaluation"]["sharpe"] == 2.5


def test_what_is_not_found_is_still_a_404_with_its_message(client, versions):
    odd_model = versions[2].model.model_id
    for path, message in (
        ("/clm/models/nope-x-1h/production", "model 'nope-x-1h'"),
        (f"/clm/models/{odd_model}/production", "has no production version"),
        (f"/clm/models/{MODEL}/versions/99", "has no version 99"),
    ):
        response = client.get(path)
        assert response.status_code == 404 and message in response.json()["detail"], path
    assert selectors.production_version_rows(model_id=odd_model) is None


def test_a_promotion_shows_at_once(client, versions):
    live, bare, _ = versions
    assert client.get(f"/clm/models/{MODEL}/production").json()["version"] == live.version
    services.model_version_promote(model_id=MODEL, version=bare.version, actor="t")
    answer = client.get(f"/clm/models/{MODEL}/production").json()
    assert answer["version"] == bare.version and answer["latest_evaluation"] is None
    assert client.get(f"/clm/models?status=production&model_id={MODEL}").json()["count"] == 1


def test_the_browsable_api_renders_rows_written_as_json_text(client, versions):
    response = client.get("/clm/models?limit=5", HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and b"big" in response.content
    indented = client.get("/clm/models?limit=5", HTTP_ACCEPT="application/json; indent=4")
    assert indented.status_code == 200 and b'\n    "count"' in indented.content
    assert (
        json.loads(indented.content)["results"]
        == client.get("/clm/models?limit=5").json()["results"]
    )


def test_the_versions_of_one_model_look_the_model_up_only_when_none_is_found(client, versions):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    body = client.get(f"/clm/models/{MODEL}/versions?limit=5").json()
    assert body["count"] == 2 and [v["version"] for v in body["results"]] == [2, 1]
    with CaptureQueriesContext(connection) as captured:
        client.get(f"/clm/models/{MODEL}/versions?limit=5")
    assert len(captured) == 3  # token, revision, page: the count is kept
    none_failed = client.get(f"/clm/models/{MODEL}/versions?status=failed")
    assert none_failed.status_code == 200 and none_failed.json()["count"] == 0
    unknown = client.get("/clm/models/nope-x-1h/versions?status=failed")
    assert unknown.status_code == 404 and "unknown model" in unknown.json()["detail"]
