"""Workers on several machines: real `celery worker` processes, each with local directories of its
own, sharing one PostgreSQL, one broker (each test runs on both) and one S3-protocol store
(moto's server on loopback)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from clm_project.celery import send_task_by_name
from registry import services
from registry.models import JobStatus, ModelVersion, TrainingJob
from tests.conftest import wait_until
from tests.s3 import CuttingRelay, S3Bucket
from tests.seams import HOLD_TRAINER
from training.promotion.models import PromotionPolicy

from .conftest import store_bars

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TERMINAL = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


def machine(root: Path, bucket: S3Bucket, **extra: str) -> dict[str, str]:
    """The environment of a worker on a machine of its own: its own disk under `root`, the
    shared bucket, the test trainer."""
    return {
        **bucket.env(),
        "ARTIFACT_ROOT": str(root / "artifacts"),
        "CLM_ARTIFACT_CACHE_DIR": str(root / "artifact-cache"),
        "CLM_EXTRA_TRAINERS": HOLD_TRAINER,
        "CLM_EVENTS_CONSUME": "false",
        **extra,
    }


def permissive_gates() -> None:
    PromotionPolicy.objects.create(
        model_type="other", min_sharpe=-100, min_win_rate=0, min_profit_factor=0,
        max_drawdown=1.0, min_trades=0, min_dsr=None,
    )  # fmt: skip


def job_send(symbol: str, **params) -> TrainingJob:
    job, _ = services.training_job_create(
        request=services.JobRequest(
            model_type="other", symbol=symbol, timeframe="1h", params=params
        )
    )
    return job


def finished(job: TrainingJob, timeout: float = 180) -> TrainingJob:
    def done() -> TrainingJob | None:
        found = TrainingJob.objects.select_related("version").get(pk=job.pk)
        return found if found.status in TERMINAL else None

    return wait_until(f"job {job.pk} finished", done, timeout)  # type: ignore[return-value]


def test_the_store_going_away_mid_upload_fails_the_job_with_nothing_registered(
    start_worker, s3_server, s3_bucket, tmp_path
):
    permissive_gates()
    store_bars("CUTUSD", 2_000, seed=3)
    relay = CuttingRelay(s3_server.port, cut_after=256 * 1024)
    env = machine(tmp_path, s3_bucket, **s3_bucket.env(endpoint=relay.endpoint))
    start_worker(env=env)

    job = finished(job_send("CUTUSD", pad_bytes=1024 * 1024))

    assert relay.cut.is_set()  # the store went away during the artifact's upload
    assert job.status == JobStatus.FAILED
    assert "could not be stored" in job.error_message, job.error_message
    assert not ModelVersion.objects.filter(model=job.model).exists()
    assert s3_bucket.keys() == []
    assert not (tmp_path / "artifacts").exists()  # nothing fell back to the local disk


def test_a_version_trained_on_one_machine_is_scored_shadowed_and_rolled_back_on_another(
    start_worker, s3_artifacts, tmp_path, settings
):
    from tests.training.promotion.lifecycle import arrive, market, stamp
    from training.models import PerformanceReport
    from training.promotion.models import (
        RealisedReturn,
        RollbackDecision,
        RollbackPolicy,
        ShadowObservation,
        ShadowPolicy,
    )

    permissive_gates()
    ShadowPolicy.objects.create(
        model_type="other", mode="all", min_bars=100, max_bars=1_000, looks=2, min_trades=0
    )
    RollbackPolicy.objects.create(
        model_type="other", max_drawdown=0.10, min_rolling_sharpe=-1.0, window_bars=100,
        cooldown_hours=24.0,
    )  # fmt: skip
    bars = market(2_400, seed=7)
    arrive(bars, 2_000, symbol="TWOUSD")
    trainer_box, scorer_box = tmp_path / "machine-a", tmp_path / "machine-b"
    start_worker(
        queues=[settings.CLM_DEFAULT_QUEUE, settings.CLM_TRAINING_QUEUE],
        env=machine(trainer_box, s3_artifacts),
    )
    start_worker(queues=[settings.CLM_LIFECYCLE_QUEUE], env=machine(scorer_box, s3_artifacts))

    # Machine A trains both versions: the first goes to production, the second to shadow.
    first = finished(job_send("TWOUSD")).version
    second_job = finished(job_send("TWOUSD"))
    assert second_job.status == JobStatus.COMPLETED, second_job.error_message
    second = second_job.version
    first.refresh_from_db()
    assert (first.status, second.status) == ("production", "shadow")
    keys = s3_artifacts.keys()
    assert s3_artifacts.key(first.artifact_path) in keys
    assert s3_artifacts.key(second.artifact_path) in keys

    # Machine B, with nothing of them on its disk, shadows the second on new bars ...
    arrive(bars, 2_400, symbol="TWOUSD")
    send_task_by_name("training.shadow_evaluate", args=[])
    observation = wait_until(
        "the shadow step",
        lambda: ShadowObservation.objects.filter(comparison__shadow=second).first(),
        120,
    )
    assert observation.n_bars == 400  # the same model on both sides: no difference to judge
    # ... scores production since its training ...
    send_task_by_name("training.monitor_performance", args=[])
    report = wait_until(
        "the performance reading",
        lambda: PerformanceReport.objects.filter(version=first).first(),
        120,
    )
    assert report.status == "ok" and report.sharpe is not None, report.detail

    # ... and, once the second is promoted and loses, rolls production back to the first.
    services.model_version_promote(
        model_id=second.model.model_id, version=second.version, actor="op"
    )
    crash = [0.001] * 50 + [-0.004] * 50
    RealisedReturn.objects.bulk_create(
        RealisedReturn(version=second, source="reported", timestamp=stamp(bars, 2_300 + i), value=r)
        for i, r in enumerate(crash)
    )
    send_task_by_name("training.rollback_check", args=[])
    decisions = RollbackDecision.objects.filter(from_version=second)
    decision = wait_until("the rollback", decisions.first, 120)
    assert decision.outcome == "rolled_back" and decision.to_version_id == first.pk
    first.refresh_from_db()
    assert first.status == "production"

    # B read both artifacts from the bucket into its own cache, by sha256; no machine wrote any
    # artifact to its own disk.
    cached = {path.name for path in (scorer_box / "artifact-cache").iterdir()}
    assert {first.artifact_sha256, second.artifact_sha256} <= cached
    assert not (trainer_box / "artifacts").exists() and not (scorer_box / "artifacts").exists()


def test_jobs_of_gpu_families_are_trained_only_by_a_worker_on_the_gpu_queue(
    start_worker, s3_artifacts, tmp_path, settings
):
    settings.CLM_GPU_FAMILIES = ["other"]  # the test trainer stands in for a deep family
    permissive_gates()
    store_bars("GPUUSD", 2_000, seed=5)
    cpu = machine(tmp_path / "cpu", s3_artifacts, CLM_GPU_FAMILIES="other")
    start_worker(queues=[settings.CLM_DEFAULT_QUEUE, settings.CLM_TRAINING_QUEUE], env=cpu)
    job = job_send("GPUUSD")
    time.sleep(5)
    assert TrainingJob.objects.get(pk=job.pk).status == JobStatus.QUEUED  # no CPU worker takes it

    gpu = machine(tmp_path / "gpu", s3_artifacts, CLM_GPU_FAMILIES="other")
    start_worker(queues=[settings.CLM_GPU_QUEUE], env=gpu)
    done = finished(job)
    assert done.status == JobStatus.COMPLETED, done.error_message


# ---------------------------------------------------------------------------------------------
# Scale: four worker processes, the due-model scan and 200 short jobs

FLEET = 200
FLEET_BARS = 800


def fleet_seed(n_models: int) -> list[str]:
    """`n_models` model lines of the test trainer, never trained (so all due), each with the same
    FLEET_BARS synthetic bars, written in one go."""
    from datetime import UTC, datetime

    from training.data.synthetic import generate_bars
    from training.models import Bar, RetrainPolicy

    RetrainPolicy.objects.update_or_create(
        model_type="other",
        defaults={"enabled": True, "periodic_interval_hours": 24, "cooldown_hours": 0,
                  "max_retrains_per_day": 100},
    )  # fmt: skip
    bars, _ = generate_bars(FLEET_BARS, seed=1)
    moments = [
        datetime.fromtimestamp(int(t), tz=UTC)
        for t in bars.timestamp.astype("datetime64[s]").astype("int64")
    ]
    symbols = [f"F{n:03d}" for n in range(n_models)]
    for symbol in symbols:
        services.registered_model_get_or_create(model_type="other", symbol=symbol, timeframe="1h")
    Bar.objects.bulk_create(
        Bar(symbol=symbol, timeframe="1h", timestamp=moments[i], open=bars.open[i],
            high=bars.high[i], low=bars.low[i], close=bars.close[i], volume=bars.volume[i])
        for symbol in symbols
        for i in range(FLEET_BARS)
    )  # fmt: skip
    return symbols


def test_four_workers_scan_and_train_200_models_each_exactly_once(broker, start_worker):
    """The scan (in batches) and the jobs it creates spread over four `celery worker` processes;
    every job completes, on its first attempt, with one version. CLM_SCALE_REPORT names a file
    where the run's figures go (benchmarks/bench_scale_out.py reads it)."""
    import json
    import os

    from django.db.models import Count, Max, Min

    from training.models import SchedulerScan

    permissive_gates()
    fleet_seed(FLEET)
    env = {
        "CLM_EXTRA_TRAINERS": HOLD_TRAINER, "CLM_EVENTS_CONSUME": "false",
        "CLM_SCAN_MAX_JOBS": str(FLEET), "CLM_SCAN_BATCH_SIZE": "25",
    }  # fmt: skip
    for _ in range(4):
        start_worker(env=env)

    started = time.monotonic()
    send_task_by_name("training.scan_due_models", args=[])
    jobs = TrainingJob.objects.filter(model__model_type="other")
    wait_until(
        f"{FLEET} jobs finished",
        lambda: jobs.count() == FLEET and not jobs.exclude(status__in=TERMINAL).exists(),
        timeout=1_200,
    )
    elapsed = time.monotonic() - started

    scan = SchedulerScan.objects.get()
    assert (scan.models_checked, scan.due, scan.created, scan.joined, scan.skipped) == (
        FLEET, FLEET, FLEET, 0, 0,
    )  # fmt: skip
    failed = list(jobs.exclude(status=JobStatus.COMPLETED).values_list("error_message", flat=True))
    assert failed == []
    assert set(jobs.values_list("attempts", flat=True)) == {1}  # none run twice
    assert set(jobs.values_list("redispatches", flat=True)) == {0}  # none lost and sent again
    per_model = ModelVersion.objects.values("model").annotate(n=Count("pk"), top=Max("version"))
    assert len(per_model) == FLEET and {(row["n"], row["top"]) for row in per_model} == {(1, 1)}
    if report := os.environ.get("CLM_SCALE_REPORT"):
        span = jobs.aggregate(first=Min("created_at"), last=Max("finished_at"))
        Path(report).write_text(
            json.dumps({
                "broker": broker, "jobs": FLEET,
                "seconds": elapsed,
                "job_seconds": (span["last"] - span["first"]).total_seconds(),
            })
        )  # fmt: skip
