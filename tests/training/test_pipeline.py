"""The 10-step pipeline run in-process (no worker): outcomes, idempotency, errors, recovery."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from registry import services
from registry.artifacts import artifact_load, artifact_storage
from registry.models import (
    EvaluationResult,
    JobStatus,
    LifecycleEvent,
    ModelStatus,
    ModelVersion,
    OutboxEvent,
    TrainingJob,
)
from registry.services import JobRequest, training_job_create
from training import pipeline
from training.data import prepare
from training.data.bars import as_datetime, get_data_loader
from training.data.split import Split
from training.pipeline import STEPS, run_job
from training.promotion.models import PromotionPolicy
from training.promotion.policies import evaluation_policy_for
from training.tasks import reap_stuck_jobs_now
from training.trainers import trainer_class
from training.trainers.xgboost import XGBoostTrainer

from .conftest import store_bars

SMALL_XGB = {"n_estimators": 60, "max_depth": 3}


def make_job(symbol: str = "BTCUSDT", model_type: str = "xgboost", **kwargs) -> TrainingJob:
    params = kwargs.pop("params", SMALL_XGB if model_type == "xgboost" else {})
    job, created = training_job_create(
        request=JobRequest(
            model_type=model_type, symbol=symbol, timeframe="1h", params=params, **kwargs
        ),
        dispatch=False,
    )
    assert created
    return job


@pytest.mark.django_db
def test_job_runs_all_ten_steps_and_records_everything(btc_bars):
    job = make_job()
    assert run_job(job_id=str(job.pk)) == JobStatus.COMPLETED
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.progress == 1.0
    assert set(job.step_durations) == (set(STEPS) - {"complete"}) | {
        "train.fit",
        "train.predict",
        "evaluate.predict",
    }
    version = job.version
    assert version.version == 1
    manifest = version.manifest
    assert manifest["bars"]["count"] == 6_000
    assert len(manifest["data_sha256"]) == 64
    assert manifest["seed"] == 0 and "xgboost-cpu" in manifest["libraries"]
    assert version.feature_spec["feature_names"]
    evaluation = EvaluationResult.objects.get(version=version)
    split = manifest["split"]
    horizon = version.feature_spec["horizon"]
    # Honest evaluation: train | purge | validation | purge | test, adjacent, purges >= horizon.
    order = ["train", "purge", "validation", "test_purge", "evaluate"]
    assert set(split) == set(order)
    assert all(split[a][1] == split[b][0] for a, b in pairwise(order))
    assert split["evaluate"][1] == 6_000
    assert split["purge"][1] - split["purge"][0] >= horizon
    assert split["test_purge"][1] - split["test_purge"][0] >= horizon
    assert evaluation.n_bars == split["evaluate"][1] - split["evaluate"][0]
    # Every window with its rows and times; the evaluation's window is the test window.
    windows = manifest["windows"]
    assert set(windows) == {"train", "purge", "validation", "test_purge", "test"}
    assert windows["test"]["rows"] == split["evaluate"]
    assert windows["validation"]["rows"] == split["validation"]
    assert windows["test"]["first"] == evaluation.window_start.isoformat()
    assert windows["test"]["last"] == evaluation.window_end.isoformat()
    assert windows["train"]["first"] == version.train_start.isoformat()
    assert windows["train"]["last"] == version.train_end.isoformat()
    assert manifest["search_seen_until"] is None
    # The selection window's figures sit with the training metrics, apart from the evaluation's.
    assert version.training_metrics["n_valid_rows"] > 0
    assert {"validation_sharpe", "validation_trades"} <= set(version.training_metrics)
    assert set(evaluation.gates) == {
        "sharpe", "win_rate", "profit_factor", "max_drawdown", "trades"
    }  # fmt: skip
    if evaluation.passed:
        assert version.status == ModelStatus.PRODUCTION
        assert version.failed_gates == []
    else:
        assert version.status == ModelStatus.FAILED
        failing = {n for n, g in evaluation.gates.items() if not g["passed"]}
        assert set(version.failed_gates) == failing
    events = set(OutboxEvent.objects.values_list("event_type", flat=True))
    assert {"training_job_created", "model_trained", "model_evaluated"} <= events
    assert ("model_promoted" in events) == evaluation.passed
    # The job stores the equity picture's points; the picture is drawn when first asked for.
    assert evaluation.equity_curve == "" and evaluation.equity_series.endswith(".npz")
    picture = services.equity_curve_png_ensure(evaluation=evaluation)
    assert picture.startswith(b"\x89PNG")
    assert artifact_storage().open(evaluation.equity_curve).read() == picture
    # The artifact reloads to the same model: its positions reproduce the evaluation's.
    blob = artifact_load(path=version.artifact_path, sha256=version.artifact_sha256)
    trainer = trainer_class("xgboost").loads(blob)
    assert trainer.params["n_estimators"] == 60


@pytest.mark.django_db
def test_a_job_writes_its_own_row_once_per_step_boundary_and_never_locks_it(
    btc_bars, django_capture_on_commit_callbacks
):
    """The job's own records (issue 17: the pipeline's cost outside fit and predict): one UPDATE
    per step boundary, where the claim enters fetch_data and register's UPDATE linking the
    version also enters evaluate, and the completion; each is a conditional UPDATE (held by this
    attempt), so no job row is ever read under a lock, and the end of a job nothing waits for
    takes no lock either."""
    job = make_job()
    statements: list[str] = []

    def record(execute, sql, params, many, context):
        statements.append(sql)  # as sent, also for prepared statements
        return execute(sql, params, many, context)

    with (
        connection.execute_wrapper(record),
        django_capture_on_commit_callbacks(execute=True),  # the release of waiting jobs
    ):
        assert run_job(job_id=str(job.pk)) == JobStatus.COMPLETED
    job_sql = [sql for sql in statements if '"registry_trainingjob"' in sql]
    writes = [sql for sql in job_sql if sql.startswith("UPDATE")]
    # The claim with fetch_data; entering train, register; the version with evaluate; entering
    # save_evaluation, apply_gates; completed.
    assert len(writes) == 7
    assert [sql for sql in job_sql if "FOR UPDATE" in sql] == []
    after = statements[len(statements) - statements[::-1].index(writes[-1]) :]
    assert after and not any("FOR UPDATE" in sql for sql in after)
    job.refresh_from_db()
    assert job.step == "completed" and job.version is not None
    durations = job.step_durations
    assert durations["start"] == durations["publish_trained"] == 0
    assert durations["fetch_data"] > 0 and durations["register"] > 0


@pytest.mark.django_db
def test_a_job_chosen_by_a_search_is_tested_after_the_last_bar_the_search_saw(btc_bars):
    """A search that read up to bar 5,000 leaves the job bars 5,001 + horizon onwards to be
    tested on, however its own split would have fallen; the manifest records both."""
    seen = _bar_time(btc_bars, 5_000)
    job = make_job(trigger_context={"search_seen_until": seen.isoformat()})

    assert run_job(job_id=str(job.pk)) == JobStatus.COMPLETED

    job.refresh_from_db()
    manifest, horizon = job.version.manifest, job.version.feature_spec["horizon"]
    assert manifest["search_seen_until"] == seen.isoformat()
    assert manifest["split"]["evaluate"] == [5_001 + horizon, 6_000]
    assert manifest["windows"]["test_purge"]["first"] > seen.isoformat()
    evaluation = EvaluationResult.objects.get(version=job.version)
    assert evaluation.n_bars == 6_000 - 5_001 - horizon


def _bar_time(symbol: str, index: int) -> datetime:
    return as_datetime(get_data_loader()(symbol, "1h", None).timestamp[index])


@pytest.mark.slow
@pytest.mark.django_db
def test_passing_version_is_promoted_and_a_worse_one_stays_candidate(btc_bars):
    PromotionPolicy.objects.create(
        model_type="xgboost", min_sharpe=-100, min_win_rate=0, min_profit_factor=0,
        max_drawdown=1.0, min_trades=1, min_dsr=None,  # the comparison, not the DSR
    )  # fmt: skip
    first = make_job()
    run_job(job_id=str(first.pk))
    v1 = ModelVersion.objects.get(pk=TrainingJob.objects.get(pk=first.pk).version_id)
    assert v1.status == ModelStatus.PRODUCTION
    # Same data and seed: the same Sharpe, which does not beat production.
    second = make_job()
    run_job(job_id=str(second.pk))
    v2 = TrainingJob.objects.get(pk=second.pk).version
    assert v2.version == 2 and v2.status == ModelStatus.CANDIDATE
    assert "does not beat" in LifecycleEvent.objects.filter(version=v2).first().reason
    v1.refresh_from_db()
    assert v1.status == ModelStatus.PRODUCTION
    # The second evaluation is deflated for two trials.
    assert EvaluationResult.objects.get(version=v2).n_trials == 2


@pytest.mark.slow
@pytest.mark.django_db
def test_gates_failing_version_is_failed_with_its_gates(btc_bars):
    PromotionPolicy.objects.create(model_type="xgboost", min_sharpe=50.0, min_trades=1)
    job = make_job()
    run_job(job_id=str(job.pk))
    version = TrainingJob.objects.get(pk=job.pk).version
    assert version.status == ModelStatus.FAILED
    assert "sharpe" in version.failed_gates
    assert not OutboxEvent.objects.filter(event_type="model_promoted").exists()


@pytest.mark.slow
@pytest.mark.django_db
def test_a_job_delivered_twice_trains_once(btc_bars):
    job = make_job()
    assert run_job(job_id=str(job.pk)) == JobStatus.COMPLETED
    assert run_job(job_id=str(job.pk)) == JobStatus.COMPLETED
    assert ModelVersion.objects.count() == 1
    assert TrainingJob.objects.get(pk=job.pk).attempts == 1


@pytest.mark.django_db
def test_errors_are_stored_with_their_step(btc_bars):
    job = make_job(params={"no_such_param": 1})
    assert run_job(job_id=str(job.pk)) == JobStatus.FAILED
    job.refresh_from_db()
    assert job.error_step == "train" and "no_such_param" in job.error_message
    assert ModelVersion.objects.count() == 0


@pytest.mark.django_db
def test_too_little_data_fails_at_fetch(db):
    store_bars("TINYUSDT", 200, seed=3)
    job = make_job("TINYUSDT")
    run_job(job_id=str(job.pk))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error_step == "fetch_data"
    assert "200 bars" in job.error_message


def _leaky_builder(honest):
    """A feature builder that adds the next bar's return as a feature, "peek"."""

    def leaky(bars, spec=None, *, horizon=None):
        data = honest(bars, spec, horizon=horizon)
        future = np.append(np.diff(np.log(bars.close)), np.nan)
        features = np.column_stack([data.features, future])
        return type(data)(
            bars=data.bars, features=features, feature_names=[*data.feature_names, "peek"],
            label=data.label, horizon=data.horizon, spec=data.spec,
        )  # fmt: skip

    return leaky


@pytest.mark.slow
@pytest.mark.django_db
def test_a_feature_that_leaks_the_future_is_caught(btc_bars, monkeypatch):
    """A model fed the next bar's return as a feature would score brilliantly; it never gets to."""
    monkeypatch.setattr(prepare, "build_dataset", _leaky_builder(prepare.build_dataset))
    job = make_job()
    assert run_job(job_id=str(job.pk)) == JobStatus.FAILED
    job.refresh_from_db()
    assert job.error_step == "train"
    assert "leak the future" in job.error_message and "peek" in job.error_message
    assert not EvaluationResult.objects.exists()


@pytest.mark.slow
@pytest.mark.django_db
def test_a_leaking_feature_is_caught_after_an_honest_job_on_the_same_bars(btc_bars, monkeypatch):
    """A worker keeps datasets and causality verdicts between jobs by the function that built
    them, the bars and the spec: a leaking builder is checked afresh, never handed the honest
    builder's dataset or verdict."""
    assert run_job(job_id=str(make_job().pk)) == JobStatus.COMPLETED
    monkeypatch.setattr(prepare, "build_dataset", _leaky_builder(prepare.build_dataset))
    job = make_job()
    assert run_job(job_id=str(job.pk)) == JobStatus.FAILED
    job.refresh_from_db()
    assert job.error_step == "train" and "peek" in job.error_message
    assert EvaluationResult.objects.count() == 1


@pytest.mark.slow
@pytest.mark.django_db
def test_a_versions_own_scores_are_those_of_its_stored_artifact(btc_bars):
    """A job keeps its version's Sharpe ratios on its windows for the next job on the same bars,
    should the version be production by then: scoring the stored artifact afresh on those
    windows gives exactly the same numbers."""
    PromotionPolicy.objects.create(
        model_type="xgboost", min_sharpe=-100, min_win_rate=0, min_profit_factor=0,
        max_drawdown=1.0, min_trades=1, min_dsr=None,
    )  # fmt: skip
    job = make_job()
    assert run_job(job_id=str(job.pk)) == JobStatus.COMPLETED
    job.refresh_from_db()
    version = job.version
    assert version.status == ModelStatus.PRODUCTION
    bars = get_data_loader()("BTCUSDT", "1h", None)
    split = Split(**{name: slice(*rows) for name, rows in version.manifest["split"].items()})
    policy = evaluation_policy_for("xgboost", auto_promote_default=True)
    periods = version.manifest["annualisation"]["periods_per_year"]
    key = pipeline._incumbent_key(version, bars.sha256, split, policy.fee, periods)
    kept = pipeline._PRODUCTION_SHARPES[key]
    assert kept == pipeline._production_sharpe(version, job, policy, bars, periods, split)
    assert kept.test_sharpe == EvaluationResult.objects.get(version=version).sharpe


@pytest.mark.slow
@pytest.mark.django_db
def test_error_after_registration_marks_the_version_failed(btc_bars, monkeypatch):
    works = XGBoostTrainer.positions

    def broken(self, dataset, rows):
        if rows.stop < len(dataset):  # the validation window, in the train step
            return works(self, dataset, rows)
        raise RuntimeError("prediction exploded")

    monkeypatch.setattr(XGBoostTrainer, "positions", broken)  # the trainer fails in evaluate
    job = make_job()
    run_job(job_id=str(job.pk))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error_step == "evaluate"
    assert job.version.status == ModelStatus.FAILED


@pytest.mark.slow
@pytest.mark.django_db
def test_redelivered_job_of_a_dead_worker_is_retried_then_failed_cleanly(btc_bars):
    job = make_job()
    TrainingJob.objects.filter(pk=job.pk).update(
        status=JobStatus.IN_PROGRESS, attempts=1, step="train"
    )
    # Not a redelivery: someone else is running it.
    assert run_job(job_id=str(job.pk)) == JobStatus.IN_PROGRESS
    # A redelivery after the worker died: another attempt, which completes.
    assert run_job(job_id=str(job.pk), redelivered=True) == JobStatus.COMPLETED
    assert TrainingJob.objects.get(pk=job.pk).attempts == 2

    second = make_job()
    TrainingJob.objects.filter(pk=second.pk).update(
        status=JobStatus.IN_PROGRESS, attempts=2, step="train"
    )
    assert run_job(job_id=str(second.pk), redelivered=True) == JobStatus.FAILED
    second.refresh_from_db()
    assert second.status == JobStatus.FAILED and "worker lost" in second.error_message


@pytest.mark.django_db
def test_reaper_requeues_or_fails_stuck_jobs(btc_bars, django_capture_on_commit_callbacks):
    """A live heartbeat past the hard limit: stuck. Requeued once, failed at MAX_ATTEMPTS."""
    job = make_job()
    long_ago = timezone.now() - timedelta(hours=3)
    TrainingJob.objects.filter(pk=job.pk).update(
        status=JobStatus.IN_PROGRESS, attempts=1, started_at=long_ago, heartbeat_at=timezone.now()
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        counts = reap_stuck_jobs_now()
    assert counts["requeued"] == 1 and len(callbacks) == 1
    assert TrainingJob.objects.get(pk=job.pk).status == JobStatus.PENDING

    TrainingJob.objects.filter(pk=job.pk).update(
        status=JobStatus.IN_PROGRESS, attempts=2, started_at=long_ago, heartbeat_at=timezone.now()
    )
    assert reap_stuck_jobs_now()["failed"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "time limit" in job.error_message


@pytest.mark.slow
@pytest.mark.django_db
def test_error_after_promotion_fails_the_job_and_leaves_production_alone(btc_bars, monkeypatch):
    PromotionPolicy.objects.create(
        model_type="xgboost", min_sharpe=-100, min_win_rate=0, min_profit_factor=0,
        max_drawdown=1.0, min_trades=1,
    )  # fmt: skip
    honest = services.model_version_promote

    def promote_then_crash(**kwargs):
        honest(**kwargs)
        raise RuntimeError("lost the connection after promoting")

    monkeypatch.setattr(services, "model_version_promote", promote_then_crash)
    job = make_job()
    assert run_job(job_id=str(job.pk)) == JobStatus.FAILED
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error_step == "apply_gates"
    assert job.version.status == ModelStatus.PRODUCTION
