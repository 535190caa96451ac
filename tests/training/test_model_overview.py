"""GET /clm/models/{model_id} (the model as a resource) and GET .../compare."""

from __future__ import annotations

import pytest

from registry.models import EvaluationResult
from tests.training.serving_fixtures import MODEL, N_BARS
from training.models import RetrainPolicy


def test_the_model_resource(reader_client, stored):
    RetrainPolicy.objects.update_or_create(
        model_type="xgboost", defaults={"periodic_interval_hours": 12, "enabled": True}
    )
    response = reader_client.get(f"/clm/models/{MODEL}")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["model_id"] == MODEL and body["model_type"] == "xgboost"
    assert (body["symbol"], body["timeframe"]) == ("SRV", "1h")
    assert body["production_version"]["version"] == 1
    assert body["latest_version"]["version"] == 2
    assert body["latest_version"]["status"] == "candidate"
    assert body["versions_count"] == 2
    assert body["versions_by_status"] == {"production": 1, "candidate": 1}
    policies = body["policies"]
    assert policies["retrain"]["periodic_interval_hours"] == 12
    assert policies["promotion"]["gates"]["min_sharpe"] == 1.0
    assert {"shadow", "rollback"} <= set(policies)
    assert body["last_job"] is None  # the versions were registered without a job
    schedule = body["next_training"]
    assert schedule["enabled"] is True and schedule["interval_hours"] == 12
    assert schedule["next_training_at"] is not None


def test_the_model_resource_errors(reader_client, stored):
    assert reader_client.get("/clm/models/nope-x-1h").status_code == 404
    response = reader_client.get(f"/clm/models/{MODEL}?verbose=1")
    assert response.status_code == 400 and "verbose" in response.json()["errors"]


def test_compare_side_by_side_and_on_one_window(reader_client, stored):
    response = reader_client.get(f"/clm/models/{MODEL}/compare?versions=2,1")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert [v["version"] for v in body["versions"]] == [1, 2]
    recorded = {e.version.version: e for e in EvaluationResult.objects.select_related("version")}
    for entry in body["versions"]:
        assert entry["evaluation"]["sharpe"] == pytest.approx(recorded[entry["version"]].sharpe)
        assert "gates" in entry["evaluation"] and "dsr" in entry["evaluation"]
    assert body["params_diff"] == {"max_depth": {"1": 3, "2": 4}}
    assert body["manifest_diff"] == {"seed": {"1": 1, "2": 2}}
    assert body["feature_spec_diff"] == {}
    window = body["common_window"]
    assert window["available"] is True and window["source_version"] == 2
    assert window["n_bars"] == recorded[2].n_bars
    # Both versions were evaluated on this same window, so the common scores are their own.
    for number in (1, 2):
        score = window["scores"][str(number)]
        assert score["sharpe"] == pytest.approx(recorded[number].sharpe)
        assert score["trades"] == recorded[number].trades
    assert window["n_bars"] < N_BARS


def test_compare_one_version_or_a_repeat(reader_client, stored):
    for query in ("versions=2", "versions=2,2"):
        body = reader_client.get(f"/clm/models/{MODEL}/compare?{query}").json()
        assert [v["version"] for v in body["versions"]] == [2], query


@pytest.mark.parametrize(
    ("query", "status"),
    [("versions=0,1", 400), ("versions=a,b", 400), ("", 400), ("versions=", 400),
     ("versions=1,2&x=1", 400), ("versions=1,9", 404), ("versions=1,2&versions=2", 400),
     ("versions=" + ",".join(map(str, range(1, 12))), 400)],
)  # fmt: skip
def test_compare_errors(reader_client, stored, query, status):
    response = reader_client.get(f"/clm/models/{MODEL}/compare?{query}")
    assert response.status_code == status, response.json()
    assert set(response.json()) >= {"detail", "code"}
