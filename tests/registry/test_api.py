"""The REST API at the original CLM paths: status codes, bodies, permissions, filters, paging."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connections
from django.db.utils import OperationalError
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from registry import services
from registry.artifacts import artifact_save, artifact_storage
from registry.models import (
    EventType,
    JobStatus,
    LifecycleEvent,
    ModelStatus,
    TrainingJob,
)
from tests.conftest import evaluation_add, version_add
from training.models import Bar

MODEL = "xgboost-btcusdt-1h"
TRAIN = {"model_type": "xgboost", "symbol": "BTCUSDT", "timeframe": "1h"}


def _errors(response) -> dict:
    body = response.json()
    assert body["code"] == "invalid", body
    return body["errors"]


def _job(**kwargs) -> TrainingJob:
    request = services.JobRequest(**{**TRAIN, **kwargs})
    return services.training_job_create(request=request, dispatch=False)[0]


# ---------------------------------------------------------------------------------------------
# Health, status, schema, authentication


def test_health_needs_no_credentials(anon_client, db):
    response = anon_client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["healthy"] is True
    for part in ("database", "broker"):
        assert body[part]["ok"] is True and body[part]["detail"] == "ok"
        assert body[part]["age_s"] == 0.0 and 0 <= body[part]["seconds"] < 2
    # No worker and no beat have recorded themselves in this database.
    assert body["workers"] == {
        "ok": False, "detail": f"no worker consumes {settings.CLM_TRAINING_QUEUE!r}", "count": 0,
        "hostnames": [],
        "age_s": None,
    }  # fmt: skip
    assert body["beat"] == {
        "ok": False,
        "detail": "never ticked",
        "last_tick_at": None,
        "age_s": None,
    }


def test_health_reports_an_eager_or_unreachable_broker(anon_client, db, settings):
    settings.CELERY_BROKER_URL = ""
    assert anon_client.get("/health").json()["broker"]["detail"] == "not configured (eager)"

    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"
    response = anon_client.get("/health")
    assert response.status_code == 200  # the database answers; the broker may come back
    assert response.json()["broker"]["ok"] is False


def test_health_is_503_when_the_database_is_down(anon_client, monkeypatch, settings):
    settings.CELERY_BROKER_URL = ""

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(connections["default"], "cursor", refuse)
    response = anon_client.get("/health")
    assert response.status_code == 503
    assert response.json()["database"]["ok"] is False


def test_status_counts(reader_client, make_version):
    make_version(status=ModelStatus.PRODUCTION)
    make_version(status=ModelStatus.FAILED)
    job = _job(symbol="ETHUSDT")

    body = reader_client.get("/clm/status").json()

    assert body["models"] == 2
    assert body["production_versions"] == 1
    assert body["versions"]["failed"] == 1
    assert body["jobs"]["pending"] == 1
    assert body["jobs"]["completed"] == 0
    assert body["latest_job"]["id"] == str(job.pk)
    assert body["unpublished_events"] > 0
    scheduler = body["scheduler"]
    assert set(scheduler) >= {
        "last_scan", "due_now", "next_due", "jobs_last_24h_by_trigger",
        "triggers_last_24h_by_outcome", "periodic_tasks",
    }  # fmt: skip
    assert scheduler["jobs_last_24h_by_trigger"]["manual"] == 1


@pytest.mark.parametrize(
    "path",
    [
        "/clm/status",
        "/clm/jobs",
        f"/clm/jobs/{'0' * 8}-0000-0000-0000-{'0' * 12}",
        "/clm/models",
        f"/clm/models/{MODEL}/versions",
        f"/clm/models/{MODEL}/versions/1",
        f"/clm/models/{MODEL}/versions/1/audit",
        f"/clm/models/{MODEL}/versions/1/artifact",
        f"/clm/models/{MODEL}/production",
        "/clm/evaluations",
        "/clm/events",
    ],
)
def test_reads_need_credentials(anon_client, db, path):
    response = anon_client.get(path)
    assert response.status_code in (401, 403)
    assert "credentials" in response.json()["detail"]


@pytest.mark.parametrize(
    "path", ["/clm/train", "/clm/promote", "/clm/rollback", f"/clm/jobs/{'1' * 32}/cancel"]
)
def test_commands_need_credentials_and_permission(anon_client, reader_client, path):
    assert anon_client.post(path, {}, format="json").status_code in (401, 403)
    response = reader_client.post(path, {}, format="json")
    assert response.status_code == 403
    assert "permission" in response.json()["detail"]


def test_token_and_basic_authentication(anon_client, reader, make_version):
    make_version()
    token = Token.objects.create(user=reader)

    anon_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert anon_client.get("/clm/models").status_code == 200
    anon_client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert anon_client.get("/clm/models").status_code in (401, 403)
    basic = base64.b64encode(b"reader:pw-reader-123").decode()
    anon_client.credentials(HTTP_AUTHORIZATION=f"Basic {basic}")
    assert anon_client.get("/clm/models").status_code == 200


def test_browsable_api_renders_for_a_logged_in_user(reader, make_version):
    make_version()
    client = Client()
    client.force_login(reader)
    response = client.get("/clm/models", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert MODEL in response.content.decode()


def test_schema_is_valid_and_served(anon_client, db, tmp_path: Path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yml"))
    schema = anon_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert {"/clm/train", "/clm/models/{model_id}/production", "/health"} <= set(schema["paths"])
    assert anon_client.get("/api/docs/").status_code == 200


# ---------------------------------------------------------------------------------------------
# Training requests and jobs


def test_train_creates_a_job_then_joins_it(operator_client, db, bar_add):
    bar_add(TRAIN["symbol"], TRAIN["timeframe"])
    first = operator_client.post("/clm/train", TRAIN, format="json")
    second = operator_client.post("/clm/train", TRAIN, format="json")

    assert first.status_code == second.status_code == 202
    body = first.json()
    assert body["created"] is True
    assert (body["model_id"], body["status"], body["trigger_reason"]) == (
        MODEL,
        "pending",
        "manual",
    )
    assert body["requested_by"] == "operator"
    assert second.json()["created"] is False
    assert second.json()["id"] == body["id"]
    assert TrainingJob.objects.count() == 1


def test_train_dispatches_the_job_to_the_training_queue(
    operator_client, django_capture_on_commit_callbacks, training_queue, bar_add
):
    bar_add(TRAIN["symbol"], TRAIN["timeframe"])
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(
            "/clm/train",
            {**TRAIN, "params": {"max_depth": 3}, "seed": 7, "trigger_context": {"drift": 0.3}},
            format="json",
        )

    job = TrainingJob.objects.get(pk=response.json()["id"])
    assert job.status == JobStatus.QUEUED
    assert job.celery_task_id
    assert (job.params, job.seed, job.trigger_context["drift"]) == ({"max_depth": 3}, 7, 0.3)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"model_type", "symbol", "timeframe"}),
        ({**TRAIN, "model_type": "catboost"}, {"model_type"}),
        ({**TRAIN, "timeframe": "2h"}, {"timeframe"}),
        ({**TRAIN, "symbol": "BTC/USDT"}, {"symbol"}),
        ({**TRAIN, "symbol": "x" * 40}, {"symbol"}),
        ({**TRAIN, "trigger_reason": "boredom"}, {"trigger_reason"}),
        ({**TRAIN, "trigger_reason": "drift_detected"}, {"trigger_reason"}),
        ({**TRAIN, "params": [1, 2]}, {"params"}),
        ({**TRAIN, "seed": -1}, {"seed"}),
        ({**TRAIN, "seed": 10**30}, {"seed"}),
        (
            {**TRAIN, "window_start": "2024-02-01T00:00Z", "window_end": "2024-01-01T00:00Z"},
            {"window_start"},
        ),
        ({**TRAIN, "window_end": "last tuesday"}, {"window_end"}),
    ],
)
def test_train_bad_input_is_400_with_field_messages(operator_client, db, body, fields):
    response = operator_client.post("/clm/train", body, format="json")
    assert response.status_code == 400
    assert set(_errors(response)) == fields
    assert not TrainingJob.objects.exists()


@pytest.mark.parametrize(
    "params", [{"a": "nul\x00"}, {"nul\x00": 1}, {"a": ["\ud800"]}, {"a": {"b": "\x00"}}]
)
def test_train_params_must_be_storable_json(operator_client, db, params):
    body = json.dumps({**TRAIN, "params": params})  # escapes what the client could not encode
    response = operator_client.generic("POST", "/clm/train", body, content_type="application/json")
    assert response.status_code == 400
    assert "NUL" in _errors(response)["params"][0]


@pytest.mark.parametrize("path", ["/clm/train", "/clm/promote", "/clm/rollback"])
def test_malformed_or_too_deep_json_is_400(operator_client, db, path):
    for body in ("{", "[" * 100_000, '{"model_id": NaN}'):
        response = operator_client.generic("POST", path, body, content_type="application/json")
        assert response.status_code == 400
        assert "JSON parse error" in response.json()["detail"]


def test_train_needs_bars_of_the_series(operator_client, db, bar_add):
    Bar.objects.create(
        symbol="SOLUSDT", timeframe="1h", timestamp=timezone.now(), open=1, high=2, low=1,
        close=1.5, volume=10,
    )  # fmt: skip
    bar_add("ETHUSDT")

    missing = operator_client.post("/clm/train", TRAIN, format="json")
    other_tf = operator_client.post(
        "/clm/train", {**TRAIN, "symbol": "ETHUSDT", "timeframe": "4h"}, format="json"
    )
    too_few = operator_client.post("/clm/train", {**TRAIN, "symbol": "SOLUSDT"}, format="json")
    present = operator_client.post("/clm/train", {**TRAIN, "symbol": "ethusdt"}, format="json")

    assert missing.status_code == other_tf.status_code == too_few.status_code == 400
    assert "No market data for BTCUSDT 1h" in _errors(missing)["symbol"][0]
    assert "1 bars of SOLUSDT 1h in the window; training needs 500" in _errors(too_few)["symbol"][0]
    assert present.status_code == 202
    assert present.json()["symbol"] == "ETHUSDT"


def test_jobs_list_filters_and_pages(reader_client, db):
    btc = _job()
    _job(symbol="ETHUSDT")
    _job(model_type="lightgbm")
    services.training_job_cancel(job_id=btc.pk, actor="x")

    everything = reader_client.get("/clm/jobs?limit=2").json()
    assert everything["count"] == 3
    assert len(everything["results"]) == 2
    assert "offset=2" in everything["next"]
    cancelled = reader_client.get("/clm/jobs?status=cancelled").json()["results"]
    assert [job["id"] for job in cancelled] == [str(btc.pk)]
    assert reader_client.get("/clm/jobs?symbol=ethusdt").json()["count"] == 1
    assert reader_client.get("/clm/jobs?model_type=lightgbm").json()["count"] == 1
    bad = reader_client.get("/clm/jobs?status=sleeping&model_type=abc")
    assert bad.status_code == 400
    assert set(_errors(bad)) == {"status", "model_type"}


def test_job_detail_and_unknown_or_malformed_ids(reader_client, db):
    job = _job()
    assert reader_client.get(f"/clm/jobs/{job.pk}").json()["model_id"] == MODEL
    for job_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", "1234"):
        response = reader_client.get(f"/clm/jobs/{job_id}")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_job_cancel(operator_client, db):
    job = _job()

    response = operator_client.post(f"/clm/jobs/{job.pk}/cancel")
    again = operator_client.post(f"/clm/jobs/{job.pk}/cancel")
    unknown = operator_client.post("/clm/jobs/not-a-uuid/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert again.status_code == 409
    assert "only waiting, pending or queued" in again.json()["detail"]
    assert unknown.status_code == 404


# ---------------------------------------------------------------------------------------------
# Versions


def test_models_list_nests_the_latest_evaluation(reader_client, make_version):
    version = make_version(sharpe=1.2)
    evaluation_add(version=version, sharpe=2.5)

    [row] = reader_client.get("/clm/models").json()["results"]

    assert (row["model_id"], row["version"], row["status"]) == (MODEL, 1, "candidate")
    assert (row["model_type"], row["symbol"], row["timeframe"]) == ("xgboost", "BTCUSDT", "1h")
    assert row["latest_evaluation"]["sharpe"] == 2.5
    assert row["latest_evaluation"]["gates"]["sharpe"]["passed"] is True


def test_models_list_filters_and_orders(reader_client, make_version):
    make_version(sharpe=1.1)
    make_version(sharpe=2.2, status=ModelStatus.PRODUCTION)
    make_version(symbol="ETHUSDT", timeframe="4h", sharpe=0.5, passed=False)
    make_version(model_type="lightgbm", passed=None, status=ModelStatus.TRAINING)

    def get(query: str) -> list[tuple[str, int]]:
        response = reader_client.get(f"/clm/models?{query}")
        assert response.status_code == 200, response.json()
        return [(row["model_id"], row["version"]) for row in response.json()["results"]]

    assert get(f"model_id={MODEL}&ordering=version") == [(MODEL, 1), (MODEL, 2)]
    assert get("status=production") == [(MODEL, 2)]
    assert get("symbol=ethusdt") == [("xgboost-ethusdt-4h", 1)]
    assert get("timeframe=4h") == [("xgboost-ethusdt-4h", 1)]
    assert get("model_type=lightgbm") == [("lightgbm-btcusdt-1h", 1)]
    assert get("min_sharpe=1.5") == [(MODEL, 2)]
    assert get("min_sharpe=0&ordering=-sharpe") == [
        (MODEL, 2),
        (MODEL, 1),
        ("xgboost-ethusdt-4h", 1),
    ]
    assert get("ordering=sharpe&limit=1") == [("xgboost-ethusdt-4h", 1)]
    assert len(get("ordering=-created_at&limit=2&offset=1")) == 2
    future = (timezone.now() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert get(f"created_before={future}&created_after=2020-01-01T00:00:00Z") != []
    assert get(f"created_after={future}") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("ordering=name", "ordering"),
        ("min_sharpe=high", "min_sharpe"),
        ("min_sharpe=nan", "min_sharpe"),
        ("min_sharpe=inf", "min_sharpe"),
        ("created_after=yesterday", "created_after"),
        ("status=alive", "status"),
        ("timeframe=2h", "timeframe"),
        ("model_type=catboost", "model_type"),
    ],
)
def test_models_list_bad_query_is_400(reader_client, db, query, field):
    response = reader_client.get(f"/clm/models?{query}")
    assert response.status_code == 400
    assert list(_errors(response)) == [field]


def test_versions_of_one_model(reader_client, make_version):
    make_version()
    make_version(status=ModelStatus.FAILED)
    make_version(symbol="ETHUSDT")

    body = reader_client.get(f"/clm/models/{MODEL}/versions").json()
    failed = reader_client.get(f"/clm/models/{MODEL}/versions?status=failed").json()

    assert [row["version"] for row in body["results"]] == [2, 1]
    assert [row["version"] for row in failed["results"]] == [2]
    assert reader_client.get("/clm/models/nope/versions").status_code == 404


def test_version_detail_and_unknowns(reader_client, make_version):
    make_version()
    assert reader_client.get(f"/clm/models/{MODEL}/versions/1").json()["version"] == 1
    for path in (
        f"/clm/models/{MODEL}/versions/2",
        f"/clm/models/{MODEL}/versions/{10**30}",
        f"/clm/models/{MODEL}/versions/abc",
        "/clm/models/nope/versions/1",
        "/clm/models/%C3%A9t%C3%A9/versions/1",
        "/clm/models/nul%00/versions/1",
    ):
        assert reader_client.get(path).status_code == 404, path


def test_version_audit(reader_client, make_version):
    make_version(status=ModelStatus.PRODUCTION)

    body = reader_client.get(f"/clm/models/{MODEL}/versions/1/audit").json()

    assert [row["action"] for row in body["results"]] == ["promote", "candidate", "register"]
    assert body["results"][0]["to_status"] == "production"
    assert reader_client.get(f"/clm/models/{MODEL}/versions/5/audit").status_code == 404


def test_production_version_now_and_at_a_time(reader_client, make_version):
    make_version()
    assert reader_client.get(f"/clm/models/{MODEL}/production").status_code == 404
    assert reader_client.get("/clm/models/nope/production").status_code == 404
    before = timezone.now()
    services.model_version_promote(model_id=MODEL, version=1, actor="a")
    between = timezone.now()
    make_version(status=ModelStatus.PRODUCTION)

    def live(query: str = "") -> int:
        response = reader_client.get(f"/clm/models/{MODEL}/production{query}")
        assert response.status_code == 200, response.json()
        return response.json()["version"]

    assert live() == 2
    assert live(f"?at={between.isoformat().replace('+00:00', 'Z')}") == 1
    earlier = reader_client.get(f"/clm/models/{MODEL}/production?at={before:%Y-%m-%dT%H:%M:%S.%fZ}")
    assert earlier.status_code == 404
    assert "no production version at" in earlier.json()["detail"]
    bad = reader_client.get(f"/clm/models/{MODEL}/production?at=noon")
    assert bad.status_code == 400
    assert "at" in _errors(bad)


def test_production_response_carries_its_evaluation(reader_client, make_version):
    make_version(status=ModelStatus.PRODUCTION, sharpe=1.9)
    body = reader_client.get(f"/clm/models/{MODEL}/production").json()
    assert body["status"] == "production"
    assert body["latest_evaluation"]["sharpe"] == 1.9


def test_artifact_download(operator_client, reader_client, make_version):
    stored = artifact_save(model_id=MODEL, blob=b"\x00model-bytes\xff")
    make_version(artifact=stored)
    make_version()
    path = f"/clm/models/{MODEL}/versions/1/artifact"

    response = operator_client.get(path)
    binary = operator_client.get(path, HTTP_ACCEPT="application/octet-stream")

    assert response.status_code == binary.status_code == 200
    assert response.content == binary.content == b"\x00model-bytes\xff"
    assert response["X-Content-SHA256"] == stored.sha256
    assert f"{MODEL}-v1.clm" in response["Content-Disposition"]
    assert reader_client.get(path).status_code == 403
    assert operator_client.get(f"/clm/models/{MODEL}/versions/2/artifact").status_code == 404
    assert operator_client.get(f"/clm/models/{MODEL}/versions/3/artifact").status_code == 404
    with artifact_storage().open(stored.path, "wb") as handle:
        handle.write(b"tampered")
    tampered = operator_client.get(path)
    assert tampered.status_code == 409
    assert "sha256" in tampered.json()["detail"]
    artifact_storage().delete(stored.path)


def test_artifact_download_for_staff(reader, reader_client, make_version):
    stored = artifact_save(model_id=MODEL, blob=b"bytes for staff")
    make_version(artifact=stored)
    User.objects.filter(pk=reader.pk).update(is_staff=True)
    reader.refresh_from_db()
    reader_client.force_authenticate(reader)
    assert reader_client.get(f"/clm/models/{MODEL}/versions/1/artifact").status_code == 200


# ---------------------------------------------------------------------------------------------
# Promote and rollback


def test_promote(operator_client, make_version):
    make_version(status=ModelStatus.PRODUCTION)
    make_version()

    response = operator_client.post(
        "/clm/promote", {"model_id": MODEL, "version": 2, "reason": "better"}, format="json"
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["version"], body["status"], body["changed"]) == (2, "production", True)
    assert body["latest_evaluation"] is not None
    row = LifecycleEvent.objects.filter(action="promote", version__version=2).get()
    assert (row.actor, row.reason) == ("operator", "better")
    assert operator_client.get(f"/clm/models/{MODEL}/versions/1").json()["status"] == "retired"


def test_promote_errors(operator_client, make_version):
    make_version(status=ModelStatus.FAILED)
    make_version(status=ModelStatus.PRODUCTION)

    def post(body: dict):
        return operator_client.post("/clm/promote", body, format="json")

    failed = post({"model_id": MODEL, "version": 1})
    assert failed.status_code == 409
    assert "it is failed" in failed.json()["detail"]
    again = post({"model_id": MODEL, "version": 2})  # already production: a safe retry
    assert again.status_code == 200
    assert (again.json()["changed"], again.json()["status"]) == (False, "production")
    assert LifecycleEvent.objects.filter(action="promote", version__version=2).count() == 1
    assert post({"model_id": MODEL, "version": 3}).status_code == 404
    assert post({"model_id": "nope", "version": 1}).status_code == 404
    missing = post({})
    assert missing.status_code == 400
    assert set(_errors(missing)) == {"model_id", "version"}
    assert set(_errors(post({"model_id": MODEL, "version": "two"}))) == {"version"}
    assert set(_errors(post({"model_id": MODEL, "version": 0}))) == {"version"}
    assert set(_errors(post({"model_id": MODEL, "version": 2**40}))) == {"version"}
    assert set(_errors(post({"model_id": ["x"], "version": 1}))) == {"model_id"}


def test_rollback(operator_client, make_version):
    make_version(status=ModelStatus.PRODUCTION)
    make_version(status=ModelStatus.PRODUCTION)
    make_version(status=ModelStatus.CANDIDATE, passed=False)

    def post(body: dict):
        return operator_client.post("/clm/rollback", body, format="json")

    response = post({"model_id": MODEL, "target_version": 1, "reason": "v2 drifts"})
    assert response.status_code == 200
    assert response.json()["status"] == "production"
    assert LifecycleEvent.objects.filter(action="rollback", actor="operator").count() == 1
    assert post({"model_id": MODEL, "target_version": 1}).status_code == 409
    assert "never in production" in post({"model_id": MODEL, "target_version": 3}).json()["detail"]
    assert post({"model_id": MODEL, "target_version": 9}).status_code == 404
    assert set(_errors(post({"model_id": MODEL}))) == {"target_version"}
    # `version`, as promote names it, is accepted too.
    assert post({"model_id": MODEL, "version": 2}).json()["version"] == 2
    assert set(_errors(post({"model_id": MODEL, "version": 1, "target_version": 2}))) == {"version"}


# ---------------------------------------------------------------------------------------------
# Evaluations and events


def test_evaluations_filters(reader_client, make_version):
    make_version(passed=True)
    make_version(passed=False)
    make_version(symbol="ETHUSDT")

    def versions(query: str) -> list[tuple[str, int, bool]]:
        response = reader_client.get(f"/clm/evaluations?{query}")
        assert response.status_code == 200, response.json()
        return sorted(
            (r["model_id"], r["version"], r["passed"]) for r in response.json()["results"]
        )

    assert len(versions("")) == 3
    assert versions(f"model_id={MODEL}&passed=false") == [(MODEL, 2, False)]
    assert versions("version=1&passed=true") == [(MODEL, 1, True), ("xgboost-ethusdt-1h", 1, True)]
    bad = reader_client.get("/clm/evaluations?passed=maybe&version=x")
    assert bad.status_code == 400
    assert set(_errors(bad)) == {"passed", "version"}


def test_events_filters(reader_client, make_version):
    make_version(status=ModelStatus.PRODUCTION)
    _job(symbol="ETHUSDT")

    def types(query: str) -> list[str]:
        response = reader_client.get(f"/clm/events?{query}")
        assert response.status_code == 200, response.json()
        return sorted(row["event_type"] for row in response.json()["results"])

    assert types(f"model_id={MODEL}") == ["model_evaluated", "model_promoted", "model_trained"]
    assert types("event_type=training_job_created") == ["training_job_created"]
    assert types("published=false") == types("")
    assert types("published=true") == []
    first = reader_client.get("/clm/events?event_type=model_promoted").json()["results"][0]
    assert first["published"] is False
    assert first["payload"]["version"] == 1
    assert set(_errors(reader_client.get("/clm/events?event_type=x"))) == {"event_type"}
    assert EventType.MODEL_ROLLBACK not in types("")


# ---------------------------------------------------------------------------------------------
# Query counts: constant in the page size


def _seed_many(n: int) -> None:
    """n versions over 6 models with two evaluations each, n jobs, n audit rows for SYM0 v1."""
    for i in range(n):
        version = version_add(symbol=f"SYM{i % 6}")
        evaluation_add(version=version, sharpe=1.0 + i / 100)
        services.training_job_cancel(job_id=_job(symbol="SOLUSDT").pk)
    for i in range(n // 2):
        services.model_version_promote(model_id="xgboost-sym0-1h", version=1 + i % 2, actor="a")


def test_list_queries_do_not_grow_with_the_page(reader_client, db, django_assert_max_num_queries):
    _seed_many(60)
    paths = [
        "/clm/models?",
        "/clm/models?min_sharpe=1&ordering=-sharpe&",
        "/clm/models/xgboost-sym0-1h/versions?",
        "/clm/models/xgboost-sym0-1h/versions/1/audit?",
        "/clm/jobs?",
        "/clm/evaluations?",
        "/clm/events?",
    ]
    for path in paths:
        for size in (5, 50):
            # (model lookup) + count + page + prefetched latest evaluations: never one per row
            with django_assert_max_num_queries(4, info=path):
                response = reader_client.get(f"{path}limit={size}")
            assert response.status_code == 200
            body = response.json()
            assert len(body["results"]) == min(size, body["count"]), path
            assert body["count"] > 5, path


def test_timestamps_are_iso_utc(reader_client, make_version):
    make_version()
    created = reader_client.get("/clm/models").json()["results"][0]["created_at"]
    parsed = datetime.fromisoformat(created.replace("Z", "+00:00"))
    assert parsed.utcoffset() == UTC.utcoffset(None)
