"""The stricter API contract: one error shape (401 included), unknown query parameters named,
training requests checked before a job exists, conflicts named, retries safe."""

from __future__ import annotations

import pytest

from registry.models import TrainingJob
from training.models import TriggerRecord

MODEL = "xgboost-btcusdt-1h"
TRAIN = {"model_type": "xgboost", "symbol": "BTCUSDT", "timeframe": "1h"}


@pytest.fixture
def btc(db, bar_add):
    bar_add("BTCUSDT")


def test_no_credentials_is_401_with_a_challenge_in_the_error_shape(anon_client, db):
    for path in ("/clm/jobs", "/clm/models", f"/clm/models/{MODEL}/signal"):
        response = anon_client.get(path)
        assert response.status_code == 401, path
        assert response["WWW-Authenticate"] == "Token"
        assert response.json() == {
            "detail": "Authentication credentials were not provided.",
            "code": "not_authenticated",
            "errors": {},
        }
    response = anon_client.post("/clm/train", TRAIN, format="json")
    assert response.status_code == 401


def test_every_error_has_detail_code_and_errors(reader_client, db):
    for path in (f"/clm/models/{MODEL}", "/clm/jobs/00000000-0000-0000-0000-000000000000"):
        body = reader_client.get(path).json()
        assert set(body) >= {"detail", "code", "errors"} and body["code"] == "not_found", path
    response = reader_client.post("/clm/train", TRAIN, format="json")  # no permission
    assert response.status_code == 403
    assert set(response.json()) == {"detail", "code", "errors"}


@pytest.mark.parametrize(
    "path",
    ["/clm/jobs?model=x", "/clm/models?modelid=x", "/clm/triggers?colour=red",
     "/clm/candidates?x=1", "/clm/evaluations?passed=true&sharp=2",
     f"/clm/models/{MODEL}/production?when=now", "/clm/shadow?bogus=1"],
)  # fmt: skip
def test_unknown_query_parameters_are_named(reader_client, db, path):
    response = reader_client.get(path)
    assert response.status_code == 400, response.json()
    unknown = path.split("?")[1].split("&")[-1].split("=")[0]
    assert unknown in response.json()["errors"]
    assert unknown in response.json()["detail"]


def test_jobs_filter_by_model_id(operator_client, btc, bar_add):
    bar_add("ETHUSDT")
    operator_client.post("/clm/train", TRAIN, format="json")
    operator_client.post("/clm/train", {**TRAIN, "symbol": "ETHUSDT"}, format="json")
    listed = operator_client.get(f"/clm/jobs?model_id={MODEL}").json()
    assert [job["model_id"] for job in listed["results"]] == [MODEL]
    assert operator_client.get("/clm/jobs?model_id=nope").json()["count"] == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [({"bogus": 1}, "unknown xgboost params: ['bogus']"),
     ({"max_depth": 99}, "'max_depth' must be <= 16"),
     ({"max_depth": "deep"}, "'max_depth' must be int"),
     ({"features": {"ma_windows": [1]}}, "ma_windows must be an integer >= 2"),
     ({"horizon": 0}, "horizon must be an integer >= 1")],
)  # fmt: skip
def test_train_params_are_checked_at_the_request(operator_client, btc, params, message):
    response = operator_client.post("/clm/train", {**TRAIN, "params": params}, format="json")
    assert response.status_code == 400
    assert message in response.json()["errors"]["params"][0]
    assert not TrainingJob.objects.exists()


def test_train_window_with_too_few_bars_is_400(operator_client, btc):
    response = operator_client.post(
        "/clm/train", {**TRAIN, "window_start": "2000-01-01T00:00:00Z",
                       "window_end": "2000-02-01T00:00:00Z"}, format="json",
    )  # fmt: skip
    assert response.status_code == 400
    assert "training needs 500" in response.json()["errors"]["window_start"][0]


def test_train_is_recorded_answers_202_with_location_and_names_a_conflicting_job(
    operator_client, btc
):
    first = operator_client.post("/clm/train", {**TRAIN, "params": {"max_depth": 3}}, format="json")
    assert first.status_code == 202
    job = first.json()
    assert first["Location"] == f"http://testserver/clm/jobs/{job['id']}"
    record = TriggerRecord.objects.get()
    assert (record.outcome, record.source, str(record.job_id)) == ("created", "api", job["id"])

    same = operator_client.post("/clm/train", {**TRAIN, "params": {"max_depth": 3}}, format="json")
    assert (same.status_code, same.json()["created"], same.json()["id"]) == (202, False, job["id"])

    other = operator_client.post("/clm/train", {**TRAIN, "params": {"max_depth": 5}}, format="json")
    assert other.status_code == 409
    assert other.json()["active_job"] == job["id"] and job["id"] in other.json()["detail"]
    reseeded = operator_client.post(
        "/clm/train", {**TRAIN, "params": {"max_depth": 3}, "seed": 4}, format="json"
    )
    assert reseeded.status_code == 409
    assert TrainingJob.objects.get().params == {"max_depth": 3}


def test_an_idempotency_key_returns_the_first_answer(operator_client, btc):
    headers = {"HTTP_IDEMPOTENCY_KEY": "req-1"}
    first = operator_client.post("/clm/train", TRAIN, format="json", **headers)
    again = operator_client.post("/clm/train", TRAIN, format="json", **headers)
    assert first.status_code == again.status_code == 202
    assert (again.json()["id"], again.json()["created"]) == (first.json()["id"], True)
    assert TriggerRecord.objects.count() == 1
    assert TrainingJob.objects.get().joined_triggers == []
    too_long = operator_client.post(
        "/clm/train", TRAIN, format="json", HTTP_IDEMPOTENCY_KEY="k" * 65
    )
    assert too_long.status_code == 400 and "Idempotency-Key" in too_long.json()["errors"]


def test_an_event_with_an_idempotency_key_is_handled_once(operator_client, btc):
    operator_client.post("/clm/train", TRAIN, format="json")
    body = {"model_id": MODEL, "drift_score": 0.9}
    first = operator_client.post(
        "/clm/events/drift_detected", body, format="json", HTTP_IDEMPOTENCY_KEY="drift-7"
    )
    again = operator_client.post(
        "/clm/events/drift_detected", body, format="json", HTTP_IDEMPOTENCY_KEY="drift-7"
    )
    assert first.status_code == again.status_code == 202
    assert first.json()["event_id"] == "drift-7"
    assert [r["duplicate"] for r in again.json()["results"]] == [True]
    assert TriggerRecord.objects.filter(event_id="drift-7").count() == 1


def test_if_active_queue_waits_for_the_active_job_and_starts_after_it(
    operator_client, btc, django_capture_on_commit_callbacks
):
    from registry import services
    from training.tasks import reap_stuck_jobs_now

    def train(params, **extra):
        return operator_client.post(
            "/clm/train", {**TRAIN, "params": params, **extra}, format="json"
        )

    active = train({"max_depth": 3}).json()
    queued = train({"max_depth": 5}, if_active="queue")
    assert queued.status_code == 202, queued.json()
    waiting = queued.json()
    assert (waiting["status"], waiting["queued_after"], waiting["created"]) == (
        "waiting", active["id"], True
    )  # fmt: skip
    assert queued["Location"].endswith(f"/clm/jobs/{waiting['id']}")
    # The same recipe queued again (here through the query parameter) joins the waiting job.
    again = operator_client.post(
        "/clm/train?if_active=queue", {**TRAIN, "params": {"max_depth": 5}}, format="json"
    )
    assert (again.json()["id"], again.json()["created"]) == (waiting["id"], False)
    later = train({"max_depth": 7}, if_active="queue").json()
    assert later["status"] == "waiting" and later["id"] != waiting["id"]
    bad = train({"max_depth": 5}, if_active="later")
    assert bad.status_code == 400 and "if_active" in bad.json()["errors"]
    assert TriggerRecord.objects.filter(outcome="created").count() == 3

    def status(job):
        return TrainingJob.objects.get(pk=job["id"]).status

    # The active job ends: the oldest waiting job starts (dispatched), the other keeps waiting.
    with django_capture_on_commit_callbacks(execute=True):
        services.training_job_fail(job_id=active["id"], step="train", error="boom")
    assert (status(waiting), status(later)) == ("queued", "waiting")
    # A waiting job cancels like a queued one; cancelling the running one releases the next.
    with django_capture_on_commit_callbacks(execute=True):
        services.training_job_cancel(job_id=waiting["id"], actor="op")
    assert status(later) == "queued"
    # A job that ended without releasing its waiter (a crash between the two): the reaper does.
    held = train({"max_depth": 9}, if_active="queue").json()
    assert held["status"] == "waiting"
    TrainingJob.objects.filter(pk=later["id"]).update(status="failed")
    with django_capture_on_commit_callbacks(execute=True):
        counts = reap_stuck_jobs_now()
    assert counts["released"] == 1 and status(held) == "queued"
